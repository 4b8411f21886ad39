package gateway_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/gateway"
)

const (
	clientTraceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientTraceparent = "00-" + clientTraceID + "-00f067aa0ba902b7-01"
	clientTracestate  = "vendor=opaque"
)

func traceRecorder(t *testing.T) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	return tp, rec
}

func endedSpan(t *testing.T, rec *tracetest.SpanRecorder, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	for _, s := range rec.Ended() {
		if s.Name() == name {
			return s
		}
	}
	t.Fatalf("no ended %s span", name)
	return nil
}

// parseTraceparent splits a W3C traceparent into its trace and parent IDs.
func parseTraceparent(t *testing.T, v string) (traceID, parentID string) {
	t.Helper()
	parts := strings.Split(v, "-")
	if len(parts) != 4 {
		t.Fatalf("traceparent %q is not W3C's", v)
	}
	return parts[1], parts[2]
}

// The upstream's replay carries the replay span's traceparent, in the
// trace of the submit; a request only forwarded keeps the client's.
func TestReplayCarriesTheReplaySpansTraceparent(t *testing.T) {
	t.Parallel()
	tp, rec := traceRecorder(t)
	seenC := make(chan seen, 2)
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenC <- record(r)
		w.Write([]byte("ok"))
	})
	b := setup(t, upstream, gateway.Config{Async: []gateway.Route{{Pattern: "POST /reports/{id}"}}, TracerProvider: tp})

	forwarded, _ := http.NewRequest(http.MethodGet, b.gateway.URL+"/health", nil)
	forwarded.Header.Set("Traceparent", clientTraceparent)
	forwarded.Header.Set("Tracestate", clientTracestate)
	if resp, body := b.do(t, forwarded); resp.StatusCode != http.StatusOK {
		t.Fatalf("forwarded request: %d %s", resp.StatusCode, body)
	}
	if got := <-seenC; got.header.Get("Traceparent") != clientTraceparent || got.header.Get("Tracestate") != clientTracestate {
		t.Errorf("a forwarded request reached the upstream with traceparent %q, tracestate %q; want the client's %q, %q",
			got.header.Get("Traceparent"), got.header.Get("Tracestate"), clientTraceparent, clientTracestate)
	}

	submitted, _ := http.NewRequest(http.MethodPost, b.gateway.URL+"/reports/7", strings.NewReader("q"))
	submitted.Header.Set("Traceparent", clientTraceparent)
	resp, body := b.do(t, submitted)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %d %s, want 202", resp.StatusCode, body)
	}
	replayed := <-seenC
	if final, body := b.finalResponse(t, resp.Header.Get("Location")); final.StatusCode != http.StatusOK {
		t.Fatalf("final response: %d %s", final.StatusCode, body)
	}

	submit, replay := endedSpan(t, rec, asyncreply.SubmitSpanName), endedSpan(t, rec, asyncreply.ReplaySpanName)
	if submit.SpanContext().TraceID().String() != clientTraceID {
		t.Errorf("submit trace ID = %s, want the client's %s", submit.SpanContext().TraceID(), clientTraceID)
	}
	if values := replayed.header.Values("Traceparent"); len(values) != 1 {
		t.Fatalf("the replay reached the upstream with traceparent %q, want one", values)
	}
	traceID, parentID := parseTraceparent(t, replayed.header.Get("Traceparent"))
	if traceID != submit.SpanContext().TraceID().String() {
		t.Errorf("the upstream's replay trace ID = %s, want the submit's %s", traceID, submit.SpanContext().TraceID())
	}
	if parentID != replay.SpanContext().SpanID().String() {
		t.Errorf("the upstream's replay parent = %s, want the replay span %s", parentID, replay.SpanContext().SpanID())
	}
}
