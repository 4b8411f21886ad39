package asyncreply

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"time"

	"github.com/asyncreply/asyncreply/backend"
)

//go:embed admin.html
var dashboardSource string

// dashboardPage is the operator's dashboard, rendered on the server so that
// it reads and works without JavaScript; its script only refreshes what it
// shows from GET api/summary. As on the waiting page, html/template escapes
// every value (progress messages and failure details come from the
// application), and the page's Content-Security-Policy lets nothing run but
// its own script and style, by hash, and nothing connect or post but to
// its own origin.
var dashboardPage = template.Must(template.New("dashboard").Funcs(template.FuncMap{
	"seconds": formatSeconds,
	"time":    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
	"short": func(owner string) string {
		if len(owner) > 8 {
			return owner[:8] + "…"
		}
		return owner
	},
}).Parse(dashboardSource))

// dashboardPolicy is the dashboard's Content-Security-Policy; neither its
// script nor its style holds a template action, so the hashes are computed
// once.
var dashboardPolicy = func() string {
	var page bytes.Buffer
	if err := dashboardPage.Execute(&page, dashboardData{dashboardSummary: &dashboardSummary{}}); err != nil {
		panic("asyncreply: dashboard template: " + err.Error())
	}
	script, style := inlineBlock(page.Bytes(), "script"), inlineBlock(page.Bytes(), "style")
	if script == nil || style == nil {
		panic("asyncreply: dashboard template has no inline script or style")
	}
	return "default-src 'none'; script-src " + sourceHash(script) + "; style-src " + sourceHash(style) +
		"; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'"
}()

// dashboardData is what the page template renders.
type dashboardData struct {
	*dashboardSummary
	Policy        string
	Notice        string
	Statuses      []statusCount
	InFlightLimit int
	FailuresLimit int
}

type statusCount struct {
	Status backend.Status
	Label  string
	Count  string // "–" when the store could not be counted
}

var statusLabels = map[backend.Status]string{
	backend.NotStarted: "Waiting to run",
	backend.Running:    "Running",
	backend.Succeeded:  "Succeeded, kept",
	backend.Failed:     "Failed, kept",
}

// serveDashboard answers GET /: the page, with a notice of what a form's
// post did (?canceled=ID, ?rerun=ID).
func (m *Middleware) serveDashboard(w http.ResponseWriter, r *http.Request) {
	data := dashboardData{
		dashboardSummary: m.summary(r.Context()),
		Policy:           dashboardPolicy,
		InFlightLimit:    dashboardInFlight,
		FailuresLimit:    dashboardFailures,
	}
	query := r.URL.Query()
	if id := query.Get("canceled"); validID(id) {
		data.Notice = "Operation " + id + " canceled."
	}
	if id := query.Get("rerun"); validID(id) {
		data.Notice = "Re-run started as operation " + id + "."
	}
	for _, status := range listedStatuses {
		count := "–"
		if data.Counts != nil {
			count = strconv.Itoa(data.Counts[status])
		}
		data.Statuses = append(data.Statuses, statusCount{Status: status, Label: statusLabels[status], Count: count})
	}
	var body bytes.Buffer
	if err := dashboardPage.Execute(&body, data); err != nil {
		m.cfg.Logger.Error("asyncreply: rendering the dashboard failed", "error", err)
		writeProblem(w, http.StatusInternalServerError, "Internal Server Error", "The dashboard could not be rendered.")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(body.Len()))
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", dashboardPolicy+"; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body.Bytes())
	}
}

// formatSeconds formats a duration in seconds for the page, as its script
// does; "–" when there is nothing to show (count 0).
func formatSeconds(s float64, count any) string {
	switch n := count.(type) {
	case uint64:
		if n == 0 {
			return "–"
		}
	case int:
		if n == 0 {
			return "–"
		}
	}
	switch {
	case s < 1:
		return strconv.Itoa(int(s*1000+0.5)) + " ms"
	case s < 60:
		return fmt.Sprintf("%.1f s", s)
	default:
		return fmt.Sprintf("%.1f min", s/60)
	}
}
