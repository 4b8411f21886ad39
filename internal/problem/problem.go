// Package problem writes RFC 9457 problem details, the one shape in which
// every HTTP error of the library and the gateway leaves.
package problem

import (
	"net/http"
	"strconv"

	"github.com/asyncreply/asyncreply/internal/jsonenc"
)

// Details is an RFC 9457 problem details document.
type Details struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// New returns the details of a problem of the default type, about:blank.
func New(status int, title, detail string) *Details {
	return &Details{Type: "about:blank", Title: title, Status: status, Detail: detail}
}

// Write answers with an application/problem+json document. Details are
// written for clients: never a Go error string that leaks internals.
func Write(w http.ResponseWriter, status int, title, detail string) {
	WriteDetails(w, New(status, title, detail))
}

// WriteDetails answers with p, with its status code. It is never cached,
// and replaces whatever the response was about to be encoded as.
func WriteDetails(w http.ResponseWriter, p *Details) {
	body := p.AppendJSON(make([]byte, 0, 256))
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Encoding")
	w.WriteHeader(p.Status)
	w.Write(body)
}

// AppendJSON appends p as encoding/json would write it.
func (p *Details) AppendJSON(b []byte) []byte {
	b = append(b, `{"type":`...)
	b = jsonenc.AppendString(b, p.Type)
	b = append(b, `,"title":`...)
	b = jsonenc.AppendString(b, p.Title)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(p.Status), 10)
	if p.Detail != "" {
		b = append(b, `,"detail":`...)
		b = jsonenc.AppendString(b, p.Detail)
	}
	return append(b, '}')
}
