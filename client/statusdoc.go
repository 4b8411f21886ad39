package client

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"mime"
	"net/http"
	"strings"
)

// maxStatusDocument bounds how much of a body is read to look for a status
// document; a real one is well under a kilobyte.
const maxStatusDocument = 64 << 10

// The status values of the Microsoft REST API guidelines, which asyncreply
// servers use.
const (
	statusNotStarted = "NotStarted"
	statusRunning    = "Running"
	statusSucceeded  = "Succeeded"
	statusFailed     = "Failed"
	statusCanceled   = "Canceled"
)

// statusDocument is the part of an operation's status document the client
// uses. Servers other than asyncreply may send a subset: a status, or
// Google AIP-151's done.
type statusDocument struct {
	Status   string `json:"status"`
	Done     *bool  `json:"done"`
	Progress *struct {
		Percent float64 `json:"percent"`
		Message string  `json:"message"`
	} `json:"progress"`
	Links struct {
		Self     string `json:"self"`
		Response string `json:"response"`
		Events   string `json:"events"`
	} `json:"links"`
}

// parseStatusDocument returns the status document in body, or nil when body
// is not one: not JSON, or JSON that says nothing about an operation's state.
func parseStatusDocument(body []byte) *statusDocument {
	var doc statusDocument
	if json.Unmarshal(body, &doc) != nil {
		return nil
	}
	switch doc.Status {
	case statusNotStarted, statusRunning, statusSucceeded, statusFailed, statusCanceled:
		return &doc
	}
	if doc.Done != nil {
		return &doc
	}
	return nil
}

// finished reports whether the document says the operation has ended. A nil
// document says nothing.
func (doc *statusDocument) finished() bool {
	switch {
	case doc == nil:
		return false
	case doc.Done != nil:
		return *doc.Done
	}
	return doc.Status == statusSucceeded || doc.Status == statusFailed || doc.Status == statusCanceled
}

func (doc *statusDocument) progress(operation string) Progress {
	p := Progress{Operation: operation, Status: doc.Status}
	if doc.Progress != nil {
		p.Percent = int(math.Round(min(max(doc.Progress.Percent, 0), 100)))
		p.Message = doc.Progress.Message
	}
	return p
}

// peekStatusDocument returns the status document resp carries, or nil,
// leaving resp's body readable from its start either way, in case resp is
// the final response after all.
func peekStatusDocument(resp *http.Response) *statusDocument {
	if !isJSON(resp.Header.Get("Content-Type")) {
		return nil
	}
	head, _ := io.ReadAll(io.LimitReader(resp.Body, maxStatusDocument))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	return parseStatusDocument(head)
}

// isJSON reports whether contentType is JSON that may be a status document:
// problem details are not.
func isJSON(contentType string) bool {
	mediaType, _, err := mime.ParseMediaType(contentType)
	if err != nil || mediaType == "application/problem+json" {
		return false
	}
	return mediaType == "application/json" || strings.HasSuffix(mediaType, "+json")
}
