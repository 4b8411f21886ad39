package asyncreply_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/sqlite"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

// A client's trace context, as an instrumented client sends it.
const (
	clientTraceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientSpanID      = "00f067aa0ba902b7"
	clientTraceparent = "00-" + clientTraceID + "-" + clientSpanID + "-01"
	clientTracestate  = "vendor=opaque"
)

// newRecorder returns a tracer provider whose ended spans the returned
// recorder holds; it is shut down with the test.
func newRecorder(t *testing.T) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	return tp, rec
}

// endedSpan returns the one ended span named name.
func endedSpan(t *testing.T, rec *tracetest.SpanRecorder, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	var found []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == name {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d ended %s spans, want 1 (all ended: %v)", len(found), name, spanNames(rec.Ended()))
	}
	return found[0]
}

func spanNames(spans []sdktrace.ReadOnlySpan) []string {
	names := make([]string, len(spans))
	for i, s := range spans {
		names[i] = s.Name()
	}
	return names
}

func attr(s sdktrace.ReadOnlySpan, key attribute.Key) attribute.Value {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

func wantAttr(t *testing.T, s sdktrace.ReadOnlySpan, key attribute.Key, want any) {
	t.Helper()
	if got := attr(s, key).AsInterface(); got != want {
		t.Errorf("%s: %s = %v (%T), want %v (%T)", s.Name(), key, got, got, want, want)
	}
}

// traceparentOf is the W3C traceparent naming sc.
func traceparentOf(sc trace.SpanContext) string {
	return "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + sc.TraceFlags().String()
}

// seenHeaders is a handler that reports the trace headers of each request
// it serves.
func seenHeaders(seen chan<- http.Header) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		w.Write([]byte("report"))
	}
}

func TestTracingSubmitReplayCollect(t *testing.T) {
	t.Parallel()
	tp, rec := newRecorder(t)
	seen := make(chan http.Header, 1)
	b := setup(t, asyncreply.Config{TracerProvider: tp}, route("POST /reports/{id}", asyncreply.Async(seenHeaders(seen))))

	_, monitor := b.submit(t, http.MethodPost, "/reports/7", "q", "Traceparent", clientTraceparent, "Tracestate", clientTracestate, "Baggage", "tenant=acme")
	replayed := testwait.Recv(t, seen, "the replayed request")
	if r := b.finish(t, monitor); r.code != http.StatusSeeOther {
		t.Fatalf("poll = %s, want 303", r)
	}
	if r := b.do(t, http.MethodGet, monitor+"/response", ""); r.code != http.StatusOK || string(r.body) != "report" {
		t.Fatalf("GET /response = %s, want the stored 200", r)
	}
	id := opID(t, monitor)

	submit := endedSpan(t, rec, asyncreply.SubmitSpanName)
	if submit.SpanKind() != trace.SpanKindServer {
		t.Errorf("submit span kind = %s, want server (nothing outside started one)", submit.SpanKind())
	}
	if got := submit.SpanContext().TraceID().String(); got != clientTraceID {
		t.Errorf("submit trace ID = %s, want the client's %s", got, clientTraceID)
	}
	if got := submit.Parent().SpanID().String(); got != clientSpanID || !submit.Parent().IsRemote() {
		t.Errorf("submit parent = %s (remote %t), want the client's span %s", got, submit.Parent().IsRemote(), clientSpanID)
	}
	wantAttr(t, submit, "http.request.method", "POST")
	wantAttr(t, submit, "http.route", "/reports/{id}")
	wantAttr(t, submit, "http.response.status_code", int64(http.StatusAccepted))
	wantAttr(t, submit, asyncreply.OperationIDAttribute, id)

	replay := endedSpan(t, rec, asyncreply.ReplaySpanName)
	if replay.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("replay span kind = %s, want consumer", replay.SpanKind())
	}
	if replay.Parent().SpanID() != submit.SpanContext().SpanID() || replay.SpanContext().TraceID() != submit.SpanContext().TraceID() {
		t.Errorf("replay parent = %s in trace %s, want the submit span %s in trace %s",
			replay.Parent().SpanID(), replay.SpanContext().TraceID(), submit.SpanContext().SpanID(), submit.SpanContext().TraceID())
	}
	if links := replay.Links(); len(links) != 1 || !links[0].SpanContext.Equal(submit.SpanContext().WithRemote(true)) {
		t.Errorf("replay links = %+v, want one to the submit span %s", links, submit.SpanContext().SpanID())
	}
	wantAttr(t, replay, asyncreply.OperationIDAttribute, id)
	wantAttr(t, replay, asyncreply.OperationAttemptAttribute, int64(1))
	wantAttr(t, replay, asyncreply.OperationStatusAttribute, string(backend.Succeeded))
	wantAttr(t, replay, "http.response.status_code", int64(http.StatusOK))

	if got, want := replayed.Get("Traceparent"), traceparentOf(replay.SpanContext()); got != want {
		t.Errorf("the application's replayed traceparent = %q, want the replay span's %q", got, want)
	}
	if got := replayed.Values("Traceparent"); len(got) != 1 {
		t.Errorf("replayed traceparent values = %q, want the replay span's alone", got)
	}
	if got := replayed.Get("Tracestate"); got != clientTracestate {
		t.Errorf("replayed tracestate = %q, want the trace's %q carried on", got, clientTracestate)
	}
	if got := replayed.Get("Baggage"); got != "tenant=acme" {
		t.Errorf("replayed baggage = %q, want the client's", got)
	}

	collect := endedSpan(t, rec, asyncreply.CollectSpanName)
	wantAttr(t, collect, asyncreply.OperationIDAttribute, id)
	wantAttr(t, collect, "http.response.status_code", int64(http.StatusOK))
	if links := collect.Links(); len(links) != 1 || links[0].SpanContext.SpanID() != replay.SpanContext().SpanID() {
		t.Errorf("collect links = %+v, want one to the replay span %s", links, replay.SpanContext().SpanID())
	}
}

// An application with its own server span around the Middleware (otelhttp)
// gets the submit as a child of it.
func TestTracingSubmitUnderOuterSpan(t *testing.T) {
	t.Parallel()
	tp, rec := newRecorder(t)
	seen := make(chan http.Header, 1)
	ar, err := asyncreply.New(asyncreply.Config{TracerProvider: tp, Logger: discardLogger})
	if err != nil {
		t.Fatal(err)
	}
	inner := ar.Handler(route("POST /reports/{id}", asyncreply.Async(seenHeaders(seen))))
	outer := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tp.Tracer("outer").Start(ctx, "outer", trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		inner.ServeHTTP(w, r.WithContext(ctx))
	})
	srv := httptest.NewServer(outer)
	client := srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	b := &bundle{srv: srv, client: client, ar: ar}
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := ar.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	_, monitor := b.submit(t, http.MethodPost, "/reports/7", "", "Traceparent", clientTraceparent)
	replayed := testwait.Recv(t, seen, "the replayed request")
	b.finish(t, monitor)

	submit := endedSpan(t, rec, asyncreply.SubmitSpanName)
	// The first outer span is the submit's request's; the others, polls'.
	var outerSpan sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "outer" {
			outerSpan = s
			break
		}
	}
	if submit.Parent().SpanID() != outerSpan.SpanContext().SpanID() || submit.Parent().IsRemote() {
		t.Errorf("submit parent = %s, want the outer span %s", submit.Parent().SpanID(), outerSpan.SpanContext().SpanID())
	}
	if got := submit.SpanContext().TraceID().String(); got != clientTraceID {
		t.Errorf("submit trace ID = %s, want the client's %s through the outer span", got, clientTraceID)
	}
	if submit.SpanKind() != trace.SpanKindInternal {
		t.Errorf("submit span kind = %s, want internal under the outer server span", submit.SpanKind())
	}
	replay := endedSpan(t, rec, asyncreply.ReplaySpanName)
	if got, want := replayed.Get("Traceparent"), traceparentOf(replay.SpanContext()); got != want {
		t.Errorf("replayed traceparent = %q, want the replay span's %q", got, want)
	}
}

// With a no-op provider nothing is traced, and the replay carries the
// client's trace headers as they were recorded.
func TestTracingOff(t *testing.T) {
	t.Parallel()
	seen := make(chan http.Header, 1)
	b := setup(t, asyncreply.Config{TracerProvider: noop.NewTracerProvider()}, route("POST /reports/{id}", asyncreply.Async(seenHeaders(seen))))
	_, monitor := b.submit(t, http.MethodPost, "/reports/7", "", "Traceparent", clientTraceparent)
	replayed := testwait.Recv(t, seen, "the replayed request")
	b.finish(t, monitor)
	if got := replayed.Get("Traceparent"); got != clientTraceparent {
		t.Errorf("replayed traceparent = %q, want the client's %q untouched", got, clientTraceparent)
	}
}

// The submit's span is stored with the recorded request: a process that
// replays an operation another accepted continues its trace.
func TestTracingAcrossProcesses(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "asyncreply.db")
	open := func() *sqlite.Backend {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		be, err := sqlite.New(ctx, sqlite.Config{Path: path, Logger: discardLogger})
		if err != nil {
			t.Fatalf("sqlite.New: %v", err)
		}
		return be // stopped by its Middleware's Shutdown
	}
	acceptorTP, acceptorSpans := newRecorder(t)
	workerTP, workerSpans := newRecorder(t)
	seen := make(chan http.Header, 1)
	app := route("POST /reports/{id}", asyncreply.Async(seenHeaders(seen)))
	acceptor := setup(t, asyncreply.Config{Backend: open(), AcceptOnly: true, TracerProvider: acceptorTP}, app)
	setup(t, asyncreply.Config{Backend: open(), TracerProvider: workerTP}, app)

	_, monitor := acceptor.submit(t, http.MethodPost, "/reports/7", "", "Traceparent", clientTraceparent)
	replayed := testwait.Recv(t, seen, "the replayed request")
	acceptor.finish(t, monitor)

	submit := endedSpan(t, acceptorSpans, asyncreply.SubmitSpanName)
	replay := endedSpan(t, workerSpans, asyncreply.ReplaySpanName)
	if replay.Parent().SpanID() != submit.SpanContext().SpanID() || !replay.Parent().IsRemote() {
		t.Errorf("the worker's replay parent = %s (remote %t), want the acceptor's submit span %s",
			replay.Parent().SpanID(), replay.Parent().IsRemote(), submit.SpanContext().SpanID())
	}
	if got := replay.SpanContext().TraceID().String(); got != clientTraceID {
		t.Errorf("the worker's replay trace ID = %s, want the client's %s", got, clientTraceID)
	}
	if links := replay.Links(); len(links) != 1 || links[0].SpanContext.SpanID() != submit.SpanContext().SpanID() {
		t.Errorf("replay links = %+v, want one to the submit span", links)
	}
	if got, want := replayed.Get("Traceparent"), traceparentOf(replay.SpanContext()); got != want {
		t.Errorf("replayed traceparent = %q, want the worker's replay span's %q", got, want)
	}
}

// An operation traced: the replay continues the trace of the client's
// request, and the application sees the replay span as its parent.
func ExampleConfig_tracerProvider() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())

	ar, err := asyncreply.New(asyncreply.Config{TracerProvider: tp, Inline: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		panic(err)
	}
	defer ar.Shutdown(context.Background())
	mux := http.NewServeMux()
	mux.Handle("POST /exports", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if replay := trace.SpanContextFromContext(r.Context()); replay.IsValid() {
			fmt.Println("replayed with traceparent", r.Header.Get("Traceparent") == traceparentOf(replay))
		}
	})))
	req := httptest.NewRequest(http.MethodPost, "/exports", nil)
	req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	ar.Handler(mux).ServeHTTP(httptest.NewRecorder(), req)

	for _, s := range spans.Ended() {
		fmt.Println(s.Name(), s.SpanContext().TraceID())
	}
	// Output:
	// replayed with traceparent true
	// asyncreply.replay 4bf92f3577b34da6a3ce929d0e0e4736
	// asyncreply.submit 4bf92f3577b34da6a3ce929d0e0e4736
}

// Without Config.TracerProvider the global provider is followed, even one
// the program sets after New.
func TestTracingFollowsTheGlobalProvider(t *testing.T) {
	// Not parallel: it sets OpenTelemetry's global provider, then puts a
	// no-op back.
	seen := make(chan http.Header, 1)
	b := setup(t, asyncreply.Config{}, route("POST /reports/{id}", asyncreply.Async(seenHeaders(seen))))
	_, monitor := b.submit(t, http.MethodPost, "/reports/7", "", "Traceparent", clientTraceparent)
	if got := testwait.Recv(t, seen, "the replayed request").Get("Traceparent"); got != clientTraceparent {
		t.Errorf("before a global provider: replayed traceparent = %q, want the client's %q untouched", got, clientTraceparent)
	}
	b.finish(t, monitor)

	tp, rec := newRecorder(t)
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(noop.NewTracerProvider()) })
	_, monitor = b.submit(t, http.MethodPost, "/reports/7", "", "Traceparent", clientTraceparent)
	replayed := testwait.Recv(t, seen, "the replayed request")
	b.finish(t, monitor)
	replay := endedSpan(t, rec, asyncreply.ReplaySpanName)
	if got, want := replayed.Get("Traceparent"), traceparentOf(replay.SpanContext()); got != want {
		t.Errorf("with the global provider set after New: replayed traceparent = %q, want the replay span's %q", got, want)
	}
	if got := replay.SpanContext().TraceID().String(); got != clientTraceID {
		t.Errorf("replay trace ID = %s, want the client's %s through the default propagator", got, clientTraceID)
	}
}
