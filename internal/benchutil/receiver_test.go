package benchutil_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/internal/benchutil"
)

// The receiver counts each event once, its copies apart, and refuses what
// is not an event, so that the harness counts only deliveries that
// carried one.
func TestReceiverCountsDistinctEvents(t *testing.T) {
	r := benchutil.NewReceiver()
	at := time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano)
	for _, tc := range []struct {
		method, body string
		want         int
	}{
		{"POST", `{"id":"a:succeeded","time":"` + at + `"}`, http.StatusNoContent},
		{"POST", `{"id":"b:succeeded","time":"` + at + `"}`, http.StatusNoContent},
		{"POST", `{"id":"a:succeeded","time":"` + at + `"}`, http.StatusNoContent},
		{"POST", `{"id":"c:succeeded"}`, http.StatusBadRequest},
		{"POST", `not json`, http.StatusBadRequest},
		{"GET", ``, http.StatusMethodNotAllowed},
	} {
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, httptest.NewRequest(tc.method, "/hook", strings.NewReader(tc.body)))
		if rec.Code != tc.want {
			t.Errorf("%s %s: status %d, want %d", tc.method, tc.body, rec.Code, tc.want)
		}
	}
	st := r.Stats()
	if st.Received != 2 || st.Duplicates != 1 {
		t.Errorf("received %d, copies %d; want 2 and 1", st.Received, st.Duplicates)
	}
	if st.P50 < time.Second || st.Max < st.P50 {
		t.Errorf("lag p50 %v, max %v; want at least the second the events were sent after their time", st.P50, st.Max)
	}
}
