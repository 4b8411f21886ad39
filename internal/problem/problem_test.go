package problem

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
)

func TestWrite(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	rec.Header().Set("Content-Encoding", "gzip") // set by a handler before it failed
	Write(rec, http.StatusBadGateway, "Bad \"Gateway\"", "upstream <said> \x01 nothing\u2028")

	if rec.Code != http.StatusBadGateway {
		t.Errorf("status = %d, want 502", rec.Code)
	}
	h := rec.Header()
	if h.Get("Content-Type") != "application/problem+json" || h.Get("Cache-Control") != "no-store" ||
		h.Get("Content-Encoding") != "" || h.Get("Content-Length") != strconv.Itoa(rec.Body.Len()) {
		t.Errorf("headers = %v", h)
	}
	var got Details
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("body %q is not JSON: %v", rec.Body, err)
	}
	want := Details{Type: "about:blank", Title: "Bad \"Gateway\"", Status: 502, Detail: "upstream <said> \x01 nothing\u2028"}
	if got != want {
		t.Errorf("decoded %+v, want %+v", got, want)
	}
	if encoded, _ := json.Marshal(want); string(encoded) != rec.Body.String() {
		t.Errorf("body %s, want what encoding/json writes: %s", rec.Body, encoded)
	}
}
