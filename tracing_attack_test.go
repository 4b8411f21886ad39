package asyncreply_test

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

// W3C trace context: version 00, a non-zero trace ID and span ID, flags.
var validTraceparent = regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)

// Trace headers from a hostile or broken client — malformed, oversized,
// zero IDs, a future version with trailing data, a tracestate of thousands
// of members — are a trace context the submit ignores, not an error: the
// request is accepted, its submit span starts a trace of its own (no
// remote parent but a valid one), and the replayed request carries the
// replay span's traceparent alone, with a tracestate of at most W3C's 32
// members, whatever the client sent.
func TestTracingIgnoresHostileTraceHeaders(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("a", 64<<10)
	var members []string
	for i := range 2000 {
		members = append(members, "k"+strconv.Itoa(i)+"=v")
	}
	for _, c := range []struct {
		name                    string
		traceparent, tracestate string
		parented                bool // the submit continues the client's trace
	}{
		{"zero trace ID", "00-00000000000000000000000000000000-" + clientSpanID + "-01", clientTracestate, false},
		{"zero span ID", "00-" + clientTraceID + "-0000000000000000-01", "", false},
		{"version ff", "ff-" + clientTraceID + "-" + clientSpanID + "-01", "", false},
		{"version 00 with more", clientTraceparent + "-extra", "", false},
		{"uppercase", strings.ToUpper(clientTraceparent), "", false},
		{"oversized", "00-" + huge, huge, false},
		{"script", `00-<script>alert(1)</script>`, `a=<script>`, false},
		{"valid, with a tracestate of thousands", clientTraceparent, strings.Join(members, ","), true},
		{"valid, with an oversized tracestate", clientTraceparent, "a=" + huge, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			tp, rec := newRecorder(t)
			seen := make(chan http.Header, 1)
			b := setup(t, asyncreply.Config{TracerProvider: tp}, route("POST /reports/{id}", asyncreply.Async(seenHeaders(seen))))
			_, monitor := b.submit(t, http.MethodPost, "/reports/7", "q", "Traceparent", c.traceparent, "Tracestate", c.tracestate)
			replayed := testwait.Recv(t, seen, "the replayed request")
			b.finish(t, monitor)

			submit := endedSpan(t, rec, asyncreply.SubmitSpanName)
			if !submit.SpanContext().IsValid() {
				t.Errorf("submit span context %v is not valid", submit.SpanContext())
			}
			if got := submit.Parent().IsValid(); got != c.parented {
				t.Errorf("submit has a parent: %t, want %t (parent %v)", got, c.parented, submit.Parent())
			}
			replay := endedSpan(t, rec, asyncreply.ReplaySpanName)
			if got := replayed.Values("Traceparent"); len(got) != 1 || got[0] != traceparentOf(replay.SpanContext()) || !validTraceparent.MatchString(got[0]) {
				t.Errorf("replayed traceparent = %q, want the replay span's %q alone", got, traceparentOf(replay.SpanContext()))
			}
			state := replayed.Get("Tracestate")
			if n := strings.Count(state, ",") + 1; state != "" && (n > 32 || len(state) > 32*513) || strings.Contains(state, "<") {
				t.Errorf("replayed tracestate of %d bytes, %d members, want at most 32 valid ones", len(state), n)
			}
		})
	}
}
