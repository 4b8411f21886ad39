package asyncreply

import (
	"bytes"
	_ "embed"
	"html/template"
	"net/http"
	"strconv"
	"strings"

	"github.com/asyncreply/asyncreply/backend"
)

//go:embed waitingpage.html
var waitingPageSource string

// waitingPage is shown to browsers instead of the status document. It needs
// no JavaScript: a meta refresh reloads the monitor URL until the monitor
// answers 303 and the browser lands on the response. html/template escapes
// every value, so progress messages cannot inject markup.
var waitingPage = template.Must(template.New("waiting").Parse(waitingPageSource))

type waitingPageData struct {
	ID             string
	Self           string // path only: never a host taken from the request
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
		ID:             op.ID,
		Self:           self,
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
