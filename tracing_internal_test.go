package asyncreply

import (
	"bytes"
	"net/http"
	"reflect"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func testSpanContext(t *testing.T) *trace.SpanContext {
	t.Helper()
	state, err := trace.ParseTraceState("vendor=opaque,other=x")
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
		TraceState: state,
		Remote:     true,
	})
	return &sc
}

// A request recorded with a trace context is encoded as version 2 and read
// back with it; one without stays version 1, which earlier processes read.
func TestRecordedRequestTraceContext(t *testing.T) {
	t.Parallel()
	plain := &recordedRequest{Method: "POST", RequestURI: "/exports", Header: http.Header{"Traceparent": {"00-x"}}, Body: []byte("b")}
	v1 := plain.marshal()
	if v1[0] != recordedRequestV1 {
		t.Fatalf("without a trace context: version %d, want %d", v1[0], recordedRequestV1)
	}
	got, err := unmarshalRecordedRequest(v1)
	if err != nil || got.Trace != nil || !bytes.Equal(got.Body, plain.Body) {
		t.Fatalf("version 1 read back = %+v, %v", got, err)
	}

	traced := *plain
	traced.Trace = testSpanContext(t)
	v2 := traced.marshal()
	if v2[0] != recordedRequestV2 {
		t.Fatalf("with a trace context: version %d, want %d", v2[0], recordedRequestV2)
	}
	got, err = unmarshalRecordedRequest(v2)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, &traced) {
		t.Fatalf("version 2 round trip:\n got %+v\nwant %+v", got, &traced)
	}
	for n := range len(v2) {
		if _, err := unmarshalRecordedRequest(v2[:n]); err == nil {
			t.Fatalf("version 2 cut to %d of %d bytes: no error", n, len(v2))
		}
	}
}

func TestStoredResponseTraceContext(t *testing.T) {
	t.Parallel()
	sr := &storedResponse{StatusCode: 200, Header: http.Header{"A": {"b"}}, Body: []byte("x"), Head: true}
	if b := sr.marshal(); b[0] != storedResponseV2 {
		t.Fatalf("without a trace context: version %d, want %d", b[0], storedResponseV2)
	}
	sr.Trace = testSpanContext(t)
	b := sr.marshal()
	if b[0] != storedResponseV3 {
		t.Fatalf("with a trace context: version %d, want %d", b[0], storedResponseV3)
	}
	got, err := unmarshalStoredResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, sr) {
		t.Fatalf("version 3 round trip:\n got %+v\nwant %+v", got, sr)
	}
}

// Off, the accept path pays a check of the provider and nothing else.
func TestTracingOffAllocatesNothing(t *testing.T) {
	m, err := New(Config{Logger: nil})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := http.NewRequest(http.MethodPost, "http://example.com/reports/7", nil)
	allocs := testing.AllocsPerRun(100, func() {
		if _, span := m.startSubmit(r, "POST /reports/{id}"); span != nil {
			t.Fatal("a span with the global provider unset")
		}
		if tracer := m.tracing.on(); tracer != nil {
			t.Fatal("tracing on with the global provider unset")
		}
	})
	if allocs != 0 {
		t.Errorf("tracing off: %v allocations per submit, want 0", allocs)
	}
}
