package asyncreply_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/asyncreply/asyncreply"
)

func TestKeyEncryptsAtRest(t *testing.T) {
	t.Parallel()
	const secret = "secret-bearer-token"
	for _, keyed := range []bool{false, true} {
		t.Run(fmt.Sprintf("key=%t", keyed), func(t *testing.T) {
			t.Parallel()
			spy := newSpy()
			cfg := asyncreply.Config{Backend: spy}
			if keyed {
				cfg.Key = bytes.Repeat([]byte{7}, 32)
			}
			b := setup(t, cfg, route("POST /reports", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "answer for "+r.Header.Get("Authorization"))
			}))))
			_, loc := b.submit(t, http.MethodPost, "/reports", "confidential body", "Authorization", secret)
			b.finish(t, loc)
			if r := b.do(t, http.MethodGet, loc+"/response", ""); string(r.body) != "answer for "+secret {
				t.Fatalf("response = %s, want the handler's answer", r)
			}

			requests, responses := spy.stored()
			if len(requests) != 1 || len(responses) != 1 {
				t.Fatalf("stored %d requests, %d responses; want 1 each", len(requests), len(responses))
			}
			for _, stored := range [][]byte{requests[0], responses[0]} {
				if clear := bytes.Contains(stored, []byte(secret)); clear == keyed {
					t.Errorf("with key %t, the backend holds the secret in clear: %t", keyed, clear)
				}
			}
			// The recorded credentials are kept no longer than needed.
			op, err := spy.Get(context.Background(), opID(t, loc))
			if err != nil || len(op.Request) != 0 {
				t.Errorf("finished operation still holds its recorded request (%d bytes, %v)", len(op.Request), err)
			}
		})
	}
}
