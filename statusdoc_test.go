package asyncreply

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
)

// The hand-written encoder must produce what encoding/json produces from the
// struct tags, which document the wire format.
func TestStatusDocumentMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 11, 26, 21, 55, 0, 123456789, time.FixedZone("CET", 3600))
	links := monitorURLs{Self: "https://h/operations/x", Response: "https://h/operations/x/response", Events: "https://h/operations/x/events"}
	ops := []*backend.Operation{
		{ID: "a", Status: backend.NotStarted, CreatedAt: created, UpdatedAt: created},
		{ID: "b", Status: backend.Running, CreatedAt: created, UpdatedAt: created.Add(time.Second),
			Progress: backend.Progress{Percent: 40, Message: "step \"2\" <of> 5 & more\n\t\u2028\u2029 é \x01 \xff end"}},
		{ID: "c", Status: backend.Succeeded, CreatedAt: created, UpdatedAt: created, ExpiresAt: created.Add(time.Hour)},
		{ID: "d", Status: backend.Failed, CreatedAt: created, UpdatedAt: created, ExpiresAt: created.Add(time.Hour),
			Failure: &backend.Failure{Status: http.StatusGatewayTimeout, Title: "Gateway Timeout", Detail: "took <too> long"}},
		{ID: "e", Status: backend.Failed, CreatedAt: created, UpdatedAt: created},
		{ID: "f", Status: backend.Canceled, CreatedAt: created, UpdatedAt: created, ExpiresAt: created.Add(time.Hour)},
	}
	delivered := created.Add(time.Minute)
	for i, op := range ops {
		doc := newStatusDocument(op, links)
		if i%2 == 1 {
			doc.Callbacks = []callbackDoc{
				{URL: "https://hooks.example/a?b=<c>&d", Attempts: 2, LastStatus: 204, DeliveredAt: &delivered},
				{URL: "https://hooks.example/e", Attempts: 1, Failed: true, LastError: "address \"not\" allowed"},
			}
		}
		want, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		if got := doc.marshal(); string(got) != string(want) {
			t.Errorf("operation %s:\n got %s\nwant %s", op.ID, got, want)
		}
	}
}
