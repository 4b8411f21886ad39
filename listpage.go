package asyncreply

import (
	"bytes"
	_ "embed"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/asyncreply/asyncreply/backend"
)

//go:embed listpage.html
var listPageSource string

// listPage is what a browser sees at GET Prefix: the caller's own
// operations, a link to each, filters by status and a link to the next page.
// Like the waiting page, it works without JavaScript (a meta refresh, in
// <noscript>, reloads it while some operation is in progress), and with
// JavaScript it follows the feed of the caller's operations (Prefix +
// "events") to move each row's progress, rendering the page again when one
// finishes. Every link is a path, never a host taken from the request.
var listPage = template.Must(template.New("list").Parse(listPageSource))

// listPagePolicy is the list page's Content-Security-Policy.
var listPagePolicy = inlinePagePolicy(listPage, listPageData{})

type listPageData struct {
	Policy         string
	Refresh        string // the noscript refresh; empty when nothing is in progress
	RefreshSeconds int
	Self           string
	Events         string
	Next           string // the next page, empty on the last
	Filtered       bool
	Filters        []listPageFilter
	Operations     []listPageRow
}

type listPageFilter struct {
	Label, Href string
	Current     bool
}

type listPageRow struct {
	ID, Href, Status    string
	Percent             int
	Message             string
	Error               string // the failure's title, for a Failed operation
	Created, CreatedISO string
}

// listPageStatuses are the filters the page offers, "" standing for all.
var listPageStatuses = []backend.Status{"", backend.NotStarted, backend.Running, backend.Succeeded, backend.Failed}

// writeListPage answers a browser with page, the result of q.
func (m *Middleware) writeListPage(w http.ResponseWriter, r *http.Request, q backend.ListQuery, page backend.ListPage) {
	prefix := m.monitorPath("")
	data := listPageData{
		Policy:         listPagePolicy,
		RefreshSeconds: m.retrySeconds,
		Self:           prefix + listPageQuery(q.Statuses, ""),
		Events:         prefix + "events",
		Filtered:       len(q.Statuses) > 0,
	}
	if page.NextPageToken != "" {
		data.Next = prefix + listPageQuery(q.Statuses, page.NextPageToken)
	}
	for _, s := range listPageStatuses {
		label, statuses := string(s), []backend.Status{s}
		if s == "" {
			label, statuses = "All", nil
		}
		current := len(q.Statuses) == len(statuses) && (s == "" || q.Statuses[0] == s)
		data.Filters = append(data.Filters, listPageFilter{Label: label, Href: prefix + listPageQuery(statuses, ""), Current: current})
	}
	pending := false
	for _, op := range page.Operations {
		row := listPageRow{
			ID:         op.ID,
			Href:       m.monitorPath(op.ID),
			Status:     string(op.Status),
			Percent:    op.Progress.Percent,
			Message:    op.Progress.Message,
			Created:    op.CreatedAt.UTC().Format("2006-01-02 15:04:05 UTC"),
			CreatedISO: op.CreatedAt.UTC().Format(time.RFC3339),
		}
		switch op.Status {
		case backend.Succeeded:
			row.Percent = 100
		case backend.Failed:
			row.Error = problemFromFailure(op.Failure).Title
		default:
			pending = true
		}
		data.Operations = append(data.Operations, row)
	}
	if pending {
		data.Refresh = strconv.Itoa(m.retrySeconds) + "; url=" + data.Self
	}
	var buf bytes.Buffer
	if err := listPage.Execute(&buf, data); err != nil {
		panic("asyncreply: list page template: " + err.Error()) // the template is fixed; a failure is a bug
	}
	writePage(w, r, buf.Bytes(), http.StatusOK, listPagePolicy)
}

// listPageQuery is the query string of a list page showing statuses, from
// pageToken on.
func listPageQuery(statuses []backend.Status, pageToken string) string {
	v := url.Values{}
	for _, s := range statuses {
		v.Add("status", string(s))
	}
	if pageToken != "" {
		v.Set("pageToken", pageToken)
	}
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}
