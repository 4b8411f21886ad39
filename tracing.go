package asyncreply

import (
	"cmp"
	"context"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/asyncreply/asyncreply/backend"
)

// TracerScope is the instrumentation scope of the spans a Middleware
// starts, as trace backends show it.
const TracerScope = "github.com/asyncreply/asyncreply"

// The spans a Middleware starts. One operation's spans are one trace:
// the submit's, a child of the request that made the operation; each
// replay's, a child of the submit's; and each collect of its response,
// linked to the replay that stored it.
const (
	SubmitSpanName  = "asyncreply.submit"
	ReplaySpanName  = "asyncreply.replay"
	CollectSpanName = "asyncreply.collect"
)

// The attributes of the Middleware's spans that are not OpenTelemetry's
// semantic conventions.
const (
	OperationIDAttribute      = attribute.Key("asyncreply.operation.id")
	OperationAttemptAttribute = attribute.Key("asyncreply.operation.attempt")
	OperationStatusAttribute  = attribute.Key("asyncreply.operation.status")
)

// tracing is a Middleware's OpenTelemetry configuration. It is off — no
// span started, no header touched, nothing allocated — while the provider
// is a no-op: the global one before the program set one, or noop's.
type tracing struct {
	// fixed is set when Config.TracerProvider was: then tracer is decided
	// once, nil for a no-op provider. Otherwise the global provider is
	// looked at on every request, since a program may set it, or set
	// another, after New; global holds its tracer.
	fixed  bool
	tracer trace.Tracer
	global atomic.Pointer[providerTracer]

	propagator propagation.TextMapPropagator // Config.Propagator; nil: the global one, or W3C while it is unset
}

// providerTracer is a provider and the tracer it gave.
type providerTracer struct {
	provider trace.TracerProvider
	tracer   trace.Tracer
}

func newTracing(cfg Config) *tracing {
	t := &tracing{propagator: cfg.Propagator}
	if cfg.TracerProvider != nil {
		t.fixed = true
		if !noopProvider(cfg.TracerProvider) {
			t.tracer = cfg.TracerProvider.Tracer(TracerScope)
		}
	}
	return t
}

// on returns the tracer to start spans with, or nil when tracing is off.
// Off, it allocates nothing: it runs on every request.
func (t *tracing) on() trace.Tracer {
	if t.fixed {
		return t.tracer
	}
	tp := otel.GetTracerProvider()
	if noopProvider(tp) {
		return nil
	}
	if last := t.global.Load(); last != nil && sameProvider(last.provider, tp) {
		return last.tracer
	}
	last := &providerTracer{provider: tp, tracer: tp.Tracer(TracerScope)}
	t.global.Store(last)
	return last.tracer
}

// sameProvider reports whether a and b are one provider. Providers are
// pointers in practice; one of a type that == cannot compare is taken as
// new each time rather than panicking.
func sameProvider(a, b trace.TracerProvider) bool {
	ta := reflect.TypeOf(a)
	return ta == reflect.TypeOf(b) && ta.Comparable() && a == b
}

// defaultPropagator is the propagation used while neither
// Config.Propagator nor the global propagator is set: W3C Trace Context and
// Baggage, what OpenTelemetry's SDKs default to.
var defaultPropagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

func (t *tracing) propagation() propagation.TextMapPropagator {
	if t.propagator != nil {
		return t.propagator
	}
	if p := otel.GetTextMapPropagator(); reflect.TypeOf(p) != unsetGlobalPropagator {
		return p
	}
	return defaultPropagator
}

// The types of OpenTelemetry's global provider and propagator before the
// program sets them: delegates to no-ops, which otel.Set… replaces. Their
// package is internal to OpenTelemetry, so they are recognised by where
// they are declared; should that change, tracing is merely never off.
var (
	unsetGlobalProvider   = internalGlobalType(otel.GetTracerProvider())
	unsetGlobalPropagator = internalGlobalType(otel.GetTextMapPropagator())
)

func internalGlobalType(v any) reflect.Type {
	t := reflect.TypeOf(v)
	if t.Kind() == reflect.Pointer && t.Elem().PkgPath() == "go.opentelemetry.io/otel/internal/global" {
		return t
	}
	return nil // already set by another package's init: never unset again
}

// noopProvider reports whether tp records nothing and propagates nothing:
// noop's, or the global one before the program set it. Any other provider
// is taken at its word, even one that samples nothing: its spans still
// carry trace contexts on.
func noopProvider(tp trace.TracerProvider) bool {
	switch tp.(type) {
	case noop.TracerProvider, *noop.TracerProvider:
		return true
	}
	return reflect.TypeOf(tp) == unsetGlobalProvider
}

// startSubmit starts the span of a request becoming an operation, under
// the route pattern it matched ("" when unknown). Its parent is the span
// already in the request's context, when middleware outside (otelhttp)
// started one — then the submit is an internal span of that server span —
// or else the trace context the client sent, and the submit is the server
// span. It returns r's context and a nil span when tracing is off.
func (m *Middleware) startSubmit(r *http.Request, route string) (context.Context, trace.Span) {
	tracer := m.tracing.on()
	if tracer == nil {
		return r.Context(), nil
	}
	ctx, kind := m.incomingContext(r)
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(r.Method),
		semconv.URLPath(r.URL.Path),
		semconv.URLScheme(scheme(r)),
	}
	if route != "" {
		attrs = append(attrs, semconv.HTTPRoute(routePath(route)))
	}
	return tracer.Start(ctx, SubmitSpanName, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
}

// incomingContext returns the context a span of r's starts under, and the
// kind of that span: internal under a span that middleware outside
// started, server under the trace context the client sent (or none).
func (m *Middleware) incomingContext(r *http.Request) (context.Context, trace.SpanKind) {
	ctx := r.Context()
	if trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, trace.SpanKindInternal
	}
	return m.tracing.propagation().Extract(ctx, propagation.HeaderCarrier(r.Header)), trace.SpanKindServer
}

// endSubmit ends a submit's span with the status it was answered and the
// operation, when there is one.
func endSubmit(span trace.Span, status int, op *backend.Operation) {
	if span == nil {
		return
	}
	endHTTPSpan(span, status)
	if op != nil {
		span.SetAttributes(OperationIDAttribute.String(op.ID))
	}
	span.End()
}

// endHTTPSpan records the status of a server span's answer: 5xx is an
// error, 4xx the client's, not the server's (HTTP semantic conventions).
func endHTTPSpan(span trace.Span, status int) {
	if status == 0 {
		status = http.StatusOK // nothing written: net/http answers 200
	}
	span.SetAttributes(semconv.HTTPResponseStatusCode(status))
	if status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
}

// statusWriter remembers the status a traced request was answered with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= http.StatusOK {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// startReplay starts the span of one attempt at op, recorded as rr. Its
// parent is the submit's span, stored with the recorded request, so that
// the replay is in the trace of the request that made the operation; it
// also links to it, because a replay runs long after, in another process
// perhaps, and trace backends show a link where the parent's trace has
// ended (and keep it when a sampler drops the parent). Without a stored
// submit span (recorded before tracing was on) the parent is the trace
// context the client sent. The client's baggage goes on with the replay.
//
// The replayed request's trace headers are rewritten to name the replay
// span in place of the client's, so that the application's own spans, and
// the gateway's upstream, join the operation's trace. It returns ctx and
// a nil span when tracing is off; the request is then replayed as recorded.
func (m *Middleware) startReplay(ctx context.Context, op *backend.Operation, rr *recordedRequest) (context.Context, trace.Span) {
	tracer := m.tracing.on()
	if tracer == nil {
		return ctx, nil
	}
	p := m.tracing.propagation()
	parent := p.Extract(ctx, propagation.HeaderCarrier(rr.Header))
	opts := []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			OperationIDAttribute.String(op.ID),
			OperationAttemptAttribute.Int(op.Attempt),
			semconv.HTTPRequestMethodKey.String(rr.Method),
		),
	}
	if rr.Trace != nil && rr.Trace.IsValid() {
		parent = trace.ContextWithRemoteSpanContext(parent, *rr.Trace)
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: *rr.Trace}))
	}
	ctx, span := tracer.Start(parent, ReplaySpanName, opts...)
	for _, field := range p.Fields() {
		delete(rr.Header, http.CanonicalHeaderKey(field))
	}
	p.Inject(ctx, propagation.HeaderCarrier(rr.Header))
	return ctx, span
}

// endReplay ends a replay's span with its outcome: the operation's status
// and the answer's status code, an error for a failure. abandoned is the
// error of an attempt handed back (canceled, shut down), which stores
// nothing.
func endReplay(span trace.Span, outcome backend.Outcome, status int, abandoned error) {
	if span == nil {
		return
	}
	switch {
	case abandoned != nil:
		span.SetStatus(codes.Error, "abandoned: "+abandoned.Error())
	case outcome.Failure != nil:
		span.SetAttributes(OperationStatusAttribute.String(string(outcome.Status)), semconv.HTTPResponseStatusCode(outcome.Failure.Status))
		span.SetStatus(codes.Error, outcome.Failure.Title)
	default:
		span.SetAttributes(OperationStatusAttribute.String(string(outcome.Status)), semconv.HTTPResponseStatusCode(cmp.Or(status, http.StatusOK)))
	}
	span.End()
}

// startCollect starts the span of a read of an operation's response at its
// monitor URL. The client collects in a request of its own, so the span is
// a child of that request's trace, as startSubmit's is; writeResponse links
// it to the replay that stored the response once it has read it.
func (m *Middleware) startCollect(r *http.Request, id string) (context.Context, trace.Span) {
	tracer := m.tracing.on()
	if tracer == nil {
		return r.Context(), nil
	}
	ctx, kind := m.incomingContext(r)
	return tracer.Start(ctx, CollectSpanName, trace.WithSpanKind(kind), trace.WithAttributes(
		semconv.HTTPRequestMethodKey.String(r.Method),
		semconv.URLPath(r.URL.Path),
		OperationIDAttribute.String(id),
	))
}

// linkCollected links the collect span in ctx to the replay span that
// stored the response, when tracing is on and there was one.
func (m *Middleware) linkCollected(ctx context.Context, replay *trace.SpanContext) {
	if replay == nil || !replay.IsValid() || m.tracing.on() == nil {
		return
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddLink(trace.Link{SpanContext: *replay})
	}
}

// routePath is the path template of a ServeMux pattern, its http.route:
// "GET /reports/{id}" is "/reports/{id}".
func routePath(pattern string) string {
	if i := strings.IndexByte(pattern, '/'); i >= 0 {
		return pattern[i:]
	}
	return pattern
}

func scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}
