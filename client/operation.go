package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxPollFailures is how many polls in a row may fail (no answer, or 429
// or 503 with Retry-After) before RoundTrip gives up and returns the last
// failure: a server restarting must not end the wait, a server gone must.
const maxPollFailures = 5

// operation is one operation being followed, on behalf of one request.
type operation struct {
	t   *Transport
	req *http.Request // the caller's

	monitor    *url.URL
	events     *url.URL // nil when not offered, disabled or given up on
	eventsDead bool     // the event stream could not be used: poll instead

	// Cookies set by the server along the way (an owner cookie issued with
	// the 202, say) are sent back on later requests, as a browser would.
	jar *cookiejar.Jar

	interval    time.Duration // between the starts of two polls: Retry-After within bounds
	lastRequest time.Time     // when the latest request to the monitor started
	reported    *Progress     // the progress last given to Transport.Progress
}

// accepted reads a 202 answer to req. It returns nil when the answer names
// no monitor URL, and then leaves resp's body as it was; otherwise it closes
// resp and returns the operation to follow, with the status document the
// 202 carried, if any.
func (t *Transport) accepted(req *http.Request, resp *http.Response) (*operation, *statusDocument) {
	doc := peekStatusDocument(resp)
	location := resp.Header.Get("Location")
	if location == "" && doc != nil {
		location = doc.Links.Self
	}
	if location == "" {
		return nil, nil
	}
	monitor, err := req.URL.Parse(location)
	if err != nil || (monitor.Scheme != "http" && monitor.Scheme != "https") {
		return nil, nil
	}
	jar, _ := cookiejar.New(nil) // never fails without options
	op := &operation{
		t:          t,
		req:        req,
		monitor:    monitor,
		eventsDead: t.DisableEvents,
		jar:        jar,
	}
	op.answered(resp)
	drainAndClose(resp)
	op.observe(doc)
	return op, doc
}

// follow polls, long-polls or watches the operation until it ends and
// returns its final response. doc is the latest status document, nil when
// the server sent none.
func (op *operation) follow(ctx context.Context, doc *statusDocument) (*http.Response, error) {
	failures := 0
	for {
		var resp *http.Response
		var err error
		switch {
		case doc.finished() && doc.Links.Response != "" && doc.Status == statusSucceeded:
			return op.fetchResult(ctx, doc.Links.Response)
		case doc.finished():
			// The monitor answers with the outcome: a redirect to the
			// result, or the failure as a synchronous caller would see it.
			resp, err = op.poll(ctx, op.t.minPollInterval(), false)
		default:
			if op.events != nil && !op.eventsDead {
				if doc, err = op.watch(ctx); err != nil {
					return nil, op.abandon(ctx)
				}
				if doc.finished() {
					continue
				}
			}
			resp, err = op.poll(ctx, op.interval, true)
		}
		if ctx.Err() != nil {
			if resp != nil {
				resp.Body.Close()
			}
			return nil, op.abandon(ctx)
		}
		if err != nil {
			if failures++; failures >= maxPollFailures {
				return nil, fmt.Errorf("client: following operation %s: %w", op.monitor.Redacted(), err)
			}
			doc = nil
			continue
		}
		transient := (resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests) &&
			resp.Header.Get("Retry-After") != ""
		if transient {
			if failures++; failures < maxPollFailures {
				op.answered(resp)
				drainAndClose(resp)
				doc = nil
				continue
			}
		} else {
			failures = 0
		}
		var final *http.Response
		if final, doc, err = op.pollAnswer(ctx, resp); final != nil || err != nil {
			return final, err
		}
	}
}

// pollAnswer reads the monitor's answer to a poll. It returns the final
// response, or nil and the status document to go on with.
func (op *operation) pollAnswer(ctx context.Context, resp *http.Response) (*http.Response, *statusDocument, error) {
	switch resp.StatusCode {
	case http.StatusAccepted:
		doc := peekStatusDocument(resp)
		op.answered(resp)
		drainAndClose(resp)
		op.observe(doc)
		if doc.finished() && doc.Status != statusSucceeded {
			doc = nil // a 202 is not an outcome; poll on
		}
		return nil, doc, nil
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		location := resp.Header.Get("Location")
		if location == "" {
			return op.final(resp), nil, nil
		}
		op.observe(peekStatusDocument(resp)) // an asyncreply server's last word on progress
		drainAndClose(resp)
		result, err := op.fetchResult(ctx, location)
		return result, nil, err
	case http.StatusOK:
		// Some servers answer polls 200 with a status document until the
		// operation ends; others answer 200 with the result itself.
		doc := peekStatusDocument(resp)
		if doc == nil {
			return op.final(resp), nil, nil
		}
		if !doc.finished() {
			op.answered(resp)
			drainAndClose(resp)
			op.observe(doc)
			return nil, doc, nil
		}
		op.observe(doc)
		if doc.Status == statusSucceeded && doc.Links.Response != "" {
			drainAndClose(resp)
			return nil, doc, nil
		}
	}
	return op.final(resp), nil, nil
}

// poll GETs the monitor URL, no sooner than interval after the previous
// request to it started. A long poll asks the server to hold the request
// until the operation ends.
func (op *operation) poll(ctx context.Context, interval time.Duration, long bool) (*http.Response, error) {
	if err := sleepUntil(ctx, op.lastRequest.Add(interval)); err != nil {
		return nil, err
	}
	req := op.newRequest(ctx, http.MethodGet, op.monitor)
	req.Header.Set("Accept", "application/json")
	if seconds := op.t.longPollSeconds(); long && seconds > 0 {
		req.Header.Set("Prefer", "wait="+strconv.Itoa(seconds))
	}
	op.lastRequest = time.Now()
	return op.send(req)
}

// fetchResult GETs the operation's result at target, relative to the
// monitor URL. Whatever answers is the final response, even a redirect or a
// 202: the stored response is the application's, served verbatim.
func (op *operation) fetchResult(ctx context.Context, target string) (*http.Response, error) {
	u, err := op.monitor.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("client: operation %s: result URL %q: %w", op.monitor.Redacted(), target, err)
	}
	method := http.MethodGet
	if op.req.Method == http.MethodHead {
		method = http.MethodHead
	}
	req := op.newRequest(ctx, method, u)
	if accept := op.req.Header.Values("Accept"); len(accept) > 0 {
		req.Header["Accept"] = accept
	}
	resp, err := op.send(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, op.abandon(ctx)
		}
		return nil, fmt.Errorf("client: fetching the result of operation %s: %w", op.monitor.Redacted(), err)
	}
	return op.final(resp), nil
}

// final makes resp the answer to the caller's request.
func (op *operation) final(resp *http.Response) *http.Response {
	resp.Request = op.req
	return resp
}

// abandon deletes the operation, whose answer nobody awaits any more, with
// a context of its own since the request's has ended, and returns the
// request context's error.
func (op *operation) abandon(ctx context.Context) error {
	deleteCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), op.t.cancelTimeout())
	defer cancel()
	if resp, err := op.send(op.newRequest(deleteCtx, http.MethodDelete, op.monitor)); err == nil {
		drainAndClose(resp)
	}
	return ctx.Err()
}

// answered takes what every answer from the monitor says: when to poll
// next, and cookies to send back.
func (op *operation) answered(resp *http.Response) {
	op.interval = op.t.pollInterval(resp.Header, time.Now())
	if op.lastRequest.IsZero() {
		op.lastRequest = time.Now() // the submit's answer: its Retry-After counts from now
	}
	if cookies := resp.Cookies(); len(cookies) > 0 && resp.Request != nil {
		op.jar.SetCookies(resp.Request.URL, cookies)
	}
}

// observe takes a status document's progress and events link.
func (op *operation) observe(doc *statusDocument) {
	if doc == nil {
		return
	}
	if doc.Links.Events != "" && op.events == nil && !op.eventsDead {
		if u, err := op.monitor.Parse(doc.Links.Events); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
			op.events = u
		}
	}
	if op.t.Progress == nil {
		return
	}
	p := doc.progress(op.monitor.String())
	if op.reported != nil && *op.reported == p {
		return
	}
	op.reported = &p
	op.t.Progress(op.req, p)
}

// newRequest builds a request on the caller's behalf. Its credentials go
// only to the caller's own host, never over a downgrade to plain HTTP, as
// http.Client does on redirects.
func (op *operation) newRequest(ctx context.Context, method string, u *url.URL) *http.Request {
	req := (&http.Request{
		Method:     method,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     make(http.Header),
		Host:       u.Host,
	}).WithContext(ctx)
	if ua := op.req.Header.Values("User-Agent"); len(ua) > 0 {
		req.Header["User-Agent"] = ua
	}
	cookies := op.jar.Cookies(u)
	if sameHost(op.req.URL, u) {
		if auth := op.req.Header.Values("Authorization"); len(auth) > 0 {
			req.Header["Authorization"] = auth
		}
		set := make(map[string]bool, len(cookies))
		for _, c := range cookies {
			set[c.Name] = true
		}
		for _, c := range op.req.Cookies() {
			if !set[c.Name] { // the server's newer value wins
				cookies = append(cookies, c)
			}
		}
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	return req
}

func (op *operation) send(req *http.Request) (*http.Response, error) {
	return op.t.base().RoundTrip(req)
}

// sameHost reports whether credentials meant for from may be sent to to.
func sameHost(from, to *url.URL) bool {
	if from.Scheme == "https" && to.Scheme != "https" {
		return false
	}
	return strings.EqualFold(from.Host, to.Host)
}

// sleepUntil waits until t or until ctx ends.
func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// drainAndClose closes an intermediate response's body after reading a
// little of what is left, so that its connection can be reused.
func drainAndClose(resp *http.Response) {
	io.CopyN(io.Discard, resp.Body, 4<<10)
	resp.Body.Close()
}
