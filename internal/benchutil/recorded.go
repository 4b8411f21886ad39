package benchutil

import (
	"net/http"
	"net/http/httptest"
)

// Recorded is a response captured once, for a baseline to replay byte for
// byte.
type Recorded struct {
	Status int
	Header http.Header
	Body   []byte
}

// Capture records h's answer to req.
func Capture(h http.Handler, req *http.Request) Recorded {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return Recorded{rec.Code, rec.Header().Clone(), rec.Body.Bytes()}
}

// Plain writes the captured response: what a hand-written handler answering
// with the same bytes costs.
func (c Recorded) Plain() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		for k, v := range c.Header {
			h[k] = v
		}
		w.WriteHeader(c.Status)
		w.Write(c.Body)
	})
}
