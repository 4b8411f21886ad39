package asyncreply

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"html/template"
	"net/http"
	"strconv"
	"strings"

	"github.com/asyncreply/asyncreply/backend"
)

//go:embed waitingpage.html
var waitingPageSource string

// waitingPage is shown to browsers instead of the status document.
// html/template escapes every value, so progress messages cannot inject
// markup.
//
// Without JavaScript, a meta refresh reloads the monitor URL until the
// monitor answers 303 and the browser lands on the response. With
// JavaScript, an inline script subscribes to the operation's events, moves
// the progress bar with each one and replaces the page with the monitor URL
// (which redirects to the answer) once the operation is done. The two must
// not both run: a page that refreshes while its script streams events would
// reload every few seconds, and removing the meta element, or racing it with
// the script, does not reliably cancel a refresh already scheduled. So the
// refresh sits in <noscript>, which browsers honour only with scripting off,
// and the script falls back to a timed reload itself whenever the event
// stream cannot be used (no EventSource, a closed or failing stream). The
// cost: a browser that runs scripts but blocks this one stays on the page
// (its "Check now" link still works).
//
// The page carries its own Content-Security-Policy: nothing loads but the
// event stream from this origin, and only this script and style run, by
// hash. Neither contains a template action, so the hashes are computed once.
// A proxy that adds its own strict policy to these URLs must allow the same
// hashes (the page's policy lists them), or the script is blocked as above.
var waitingPage = template.Must(template.New("waiting").Parse(waitingPageSource))

// waitingPagePolicy is the waiting page's Content-Security-Policy.
var waitingPagePolicy = inlinePagePolicy(waitingPage, waitingPageData{})

// inlinePagePolicy is the Content-Security-Policy of a page rendered from t, one
// inline script and one inline style allowed by hash, nothing loaded but
// event streams from this origin. Neither block may contain a template
// action, so rendering t with empty data gives the hashes once.
func inlinePagePolicy(t *template.Template, empty any) string {
	var page bytes.Buffer
	if err := t.Execute(&page, empty); err != nil {
		panic("asyncreply: " + t.Name() + " page template: " + err.Error())
	}
	script, style := inlineBlock(page.Bytes(), "script"), inlineBlock(page.Bytes(), "style")
	if script == nil || style == nil {
		panic("asyncreply: " + t.Name() + " page template has no inline script or style")
	}
	return "default-src 'none'; script-src " + sourceHash(script) + "; style-src " + sourceHash(style) +
		"; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'"
}

// inlineBlock returns the content of the first <tag> element in page, nil if
// there is none.
func inlineBlock(page []byte, tag string) []byte {
	_, rest, ok := bytes.Cut(page, []byte("<"+tag))
	if !ok {
		return nil
	}
	if _, rest, ok = bytes.Cut(rest, []byte(">")); !ok {
		return nil
	}
	content, _, ok := bytes.Cut(rest, []byte("</"+tag+">"))
	if !ok {
		return nil
	}
	return content
}

// sourceHash is a CSP hash-source allowing an inline block with content b.
func sourceHash(b []byte) string {
	sum := sha256.Sum256(b)
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

type waitingPageData struct {
	Policy         string
	ID             string
	Self           string // path only: never a host taken from the request
	Events         string // path only, as Self
	Refresh        string
	RefreshSeconds int
	Percent        int
	Message        string
	Failed         bool
	Status         int
	Title          string
	Detail         string
}

func renderWaitingPage(op *backend.Operation, self string, refreshSeconds int) []byte {
	data := waitingPageData{
		Policy:         waitingPagePolicy,
		ID:             op.ID,
		Self:           self,
		Events:         self + "/events",
		Refresh:        strconv.Itoa(refreshSeconds) + "; url=" + self,
		RefreshSeconds: refreshSeconds,
		Percent:        op.Progress.Percent,
		Message:        op.Progress.Message,
	}
	if op.Status == backend.Failed {
		p := problemFromFailure(op.Failure)
		data.Failed, data.Status, data.Title, data.Detail = true, p.Status, p.Title, p.Detail
	}
	var buf bytes.Buffer
	if err := waitingPage.Execute(&buf, data); err != nil {
		panic("asyncreply: waiting page template: " + err.Error()) // the template is fixed; a failure is a bug
	}
	return buf.Bytes()
}

// writeWaitingPage answers a browser with op's waiting page (or, once op
// failed, its error page) and the given status code. The policy goes in a
// header as well as in the page's <meta>: only a header can forbid framing
// (frame-ancestors is ignored in <meta>), which keeps the page's "Check
// now" link from being clickjacked, and nosniff keeps a browser from
// reading the page as anything but HTML.
func (m *Middleware) writeWaitingPage(w http.ResponseWriter, r *http.Request, op *backend.Operation, code int) {
	writePage(w, r, renderWaitingPage(op, m.monitorPath(op.ID), m.retrySeconds), code, waitingPagePolicy)
}

// writePage answers with an HTML page of the library's own (the waiting
// page, the list of operations) and the headers they all carry; policy is
// the page's own Content-Security-Policy (its inlinePagePolicy).
func writePage(w http.ResponseWriter, r *http.Request, body []byte, code int, policy string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", policy+headerOnlyPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// headerOnlyPolicy is what a page's Content-Security-Policy header adds to
// the policy in its <meta>: what only a header can say.
const headerOnlyPolicy = "; frame-ancestors 'none'"

// prefersHTML reports whether the client ranks text/html above JSON in its
// Accept header, as browsers do. API clients (no Accept, */*, or JSON) get
// the status document.
func prefersHTML(r *http.Request) bool {
	accept := r.Header.Get("Accept")
	if !strings.Contains(accept, "text/html") {
		return false
	}
	html, json := -1.0, -1.0
	for part := range strings.SplitSeq(accept, ",") {
		mediaType, params, _ := strings.Cut(part, ";")
		mediaType = strings.ToLower(strings.TrimSpace(mediaType))
		q := 1.0
		for param := range strings.SplitSeq(params, ";") {
			if name, value, ok := strings.Cut(strings.TrimSpace(param), "="); ok && strings.EqualFold(name, "q") {
				if f, err := strconv.ParseFloat(value, 64); err == nil {
					q = f
				}
			}
		}
		switch mediaType {
		case "text/html":
			html = max(html, q)
		case "application/json", "application/problem+json":
			json = max(json, q)
		}
	}
	return html > 0 && html > json
}
