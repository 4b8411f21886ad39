package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/asyncreply/asyncreply/internal/benchutil"
)

// pollScenario: polling a finished operation (303 to its response) on each
// backend, and fetching its stored response, against a plain handler
// writing the same bytes.
func pollScenario(ctx context.Context, e *env) (section, error) {
	s := section{
		title: "2. Poll a finished operation",
		intro: `GET of the monitor URL of a finished operation answers 303 See Other to
its response; GET of the response serves the stored response. "plain"
writes the same bytes (captured from the memory backend's answer).`,
	}
	var stops stack
	defer stops.run()
	client := newClient(1)
	defer client.CloseIdleConnections()

	var comparisons []comparison
	for _, k := range e.kinds() {
		srv, stop, err := e.serve(ctx, k, 0, longRetention, benchutil.Reports(nil))
		if err != nil {
			return s, err
		}
		stops.push(stop)
		monitor, err := finishedOperation(ctx, client, srv.URL+"/reports/7")
		if err != nil {
			return s, fmt.Errorf("%s: %w", k.name, err)
		}
		poll := target{name: k.name + ", poll", url: monitor, want: http.StatusSeeOther}
		response := target{name: k.name + ", response", url: monitor + "/response", want: http.StatusOK}
		if k.name == "memory" {
			// The plain baselines write the memory backend's answers.
			pollPlain := plainTarget(&stops, "", benchutil.Capture(srv.Config.Handler, httptest.NewRequest("GET", poll.url, nil)))
			pollPlain.name = "plain, poll"
			responsePlain := plainTarget(&stops, "", benchutil.Capture(srv.Config.Handler, httptest.NewRequest("GET", response.url, nil)))
			responsePlain.name = "plain, response"
			comparisons = append(comparisons,
				comparison{subject: poll, baseline: pollPlain, open: true},
				comparison{subject: response, baseline: responsePlain})
			continue
		}
		comparisons = append(comparisons, comparison{subject: poll, baseline: comparisons[0].baseline})
	}
	tbl, closed, err := e.compare(ctx, comparisons)
	if err != nil {
		return s, err
	}
	s.tables = append(s.tables, tbl)
	s.goals = append(s.goals, ratioGoal("poll a finished operation, memory, vs plain (throughput)", "≥ 0.8×", 0.8, closed["memory, poll vs plain, poll"]))
	return s, nil
}

// finishedOperation submits a GET of submitURL, waits for its operation
// to finish, and returns its monitor URL.
func finishedOperation(ctx context.Context, client *http.Client, submitURL string) (string, error) {
	resp, _, err := get(ctx, client, submitURL, http.StatusAccepted)
	if err != nil {
		return "", err
	}
	monitor := resp.Header.Get("Location")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, monitor, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Prefer", "wait=30")
	if _, _, err := fetch(client, req, http.StatusSeeOther); err != nil {
		return "", err
	}
	return monitor, nil
}
