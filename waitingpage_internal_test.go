package asyncreply

import (
	"context"
	"encoding/json"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
)

var (
	noscriptRefresh = regexp.MustCompile(`<noscript><meta http-equiv="refresh" content="([^"]*)"></noscript>`)
	anyRefresh      = regexp.MustCompile(`http-equiv="refresh"`)
	pageScript      = regexp.MustCompile(`(?s)<script data-monitor="([^"]*)" data-events="([^"]*)" data-refresh="([^"]*)">(.*?)</script>`)
	pageStyle       = regexp.MustCompile(`(?s)<style>(.*?)</style>`)
	pagePolicy      = regexp.MustCompile(`<meta http-equiv="Content-Security-Policy" content="([^"]*)">`)
)

func TestWaitingPageMarkup(t *testing.T) {
	t.Parallel()
	running := &backend.Operation{ID: "op1", Status: backend.Running,
		Progress: backend.Progress{Percent: 40, Message: `</script><script>alert(1)</script>`}}

	t.Run("refresh without script, in noscript only", func(t *testing.T) {
		t.Parallel()
		page := string(renderWaitingPage(running, "/app/operations/op1", 3))
		m := noscriptRefresh.FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("no <noscript> meta refresh:\n%s", page)
		}
		if got := html.UnescapeString(m[1]); got != "3; url=/app/operations/op1" {
			t.Errorf("refresh = %q, want 3 s to the monitor path", got)
		}
		if n := len(anyRefresh.FindAllString(page, -1)); n != 1 {
			t.Errorf("%d refreshes, want only the one in <noscript>: with scripting on, the script alone moves on", n)
		}
	})

	t.Run("script subscribes to the events path", func(t *testing.T) {
		t.Parallel()
		page := string(renderWaitingPage(running, "/app/operations/op1", 3))
		m := pageScript.FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("no script with its data attributes:\n%s", page)
		}
		monitor, events, refresh, code := html.UnescapeString(m[1]), html.UnescapeString(m[2]), m[3], m[4]
		if monitor != "/app/operations/op1" || events != "/app/operations/op1/events" || refresh != "3" {
			t.Errorf("script data: monitor %q, events %q, refresh %q; want the monitor path, its events, 3", monitor, events, refresh)
		}
		for _, want := range []string{`new EventSource(`, `addEventListener("status"`, `location.replace(monitor)`, `progress.value =`, `message.textContent =`} {
			if !strings.Contains(code, want) {
				t.Errorf("script lacks %s:\n%s", want, code)
			}
		}
		if strings.Contains(page, "<script>alert") {
			t.Errorf("the progress message's markup is unescaped:\n%s", page)
		}
	})

	t.Run("values are escaped in every context", func(t *testing.T) {
		t.Parallel()
		const hostile = `/operations/x"><img src=y onerror=alert(1)>`
		op := &backend.Operation{ID: `x"<b>`, Status: backend.Failed,
			Failure: &backend.Failure{Status: http.StatusBadGateway, Detail: `<i>upstream</i> & "co"`}}
		for name, page := range map[string]string{
			"running": string(renderWaitingPage(running, hostile, 1)),
			"failed":  string(renderWaitingPage(op, hostile, 1)),
		} {
			for _, raw := range []string{`"><img`, `<b>`, `<i>upstream`, `<script>alert`} {
				if strings.Contains(page, raw) {
					t.Errorf("%s page contains %q unescaped:\n%s", name, raw, page)
				}
			}
		}
		page := string(renderWaitingPage(running, hostile, 1))
		m := pageScript.FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("no script with its data attributes:\n%s", page)
		}
		if got := html.UnescapeString(m[1]); got != hostile {
			t.Errorf("data-monitor unescapes to %q, want %q", got, hostile)
		}
		failed := string(renderWaitingPage(op, hostile, 1))
		if !strings.Contains(failed, `x&#34;&lt;b&gt;`) || !strings.Contains(failed, `&lt;i&gt;upstream&lt;/i&gt; &amp; &#34;co&#34;`) {
			t.Errorf("failed page does not show the ID and detail escaped:\n%s", failed)
		}
	})

	t.Run("failed page neither refreshes nor scripts", func(t *testing.T) {
		t.Parallel()
		op := &backend.Operation{ID: "op2", Status: backend.Failed, Failure: &backend.Failure{Status: http.StatusGatewayTimeout}}
		page := string(renderWaitingPage(op, "/operations/op2", 1))
		if anyRefresh.MatchString(page) || strings.Contains(page, "<script") {
			t.Errorf("failed page refreshes or runs a script:\n%s", page)
		}
		if !strings.Contains(page, "Status 504") {
			t.Errorf("failed page does not show its status:\n%s", page)
		}
	})

	t.Run("policy allows exactly the inline script and style", func(t *testing.T) {
		t.Parallel()
		for _, op := range []*backend.Operation{running, {ID: "op3", Status: backend.Failed, Failure: &backend.Failure{Status: 500}}} {
			page := string(renderWaitingPage(op, "/operations/"+op.ID, 2))
			m := pagePolicy.FindStringSubmatch(page)
			if m == nil {
				t.Fatalf("no Content-Security-Policy:\n%s", page)
			}
			policy := html.UnescapeString(m[1])
			for _, want := range []string{"default-src 'none'", "connect-src 'self'", "base-uri 'none'"} {
				if !strings.Contains(policy, want) {
					t.Errorf("policy %q lacks %q", policy, want)
				}
			}
			style := pageStyle.FindStringSubmatch(page)
			if style == nil || !strings.Contains(policy, "style-src "+sourceHash([]byte(style[1]))+";") {
				t.Errorf("policy %q does not allow the page's style by its hash", policy)
			}
			if script := pageScript.FindStringSubmatch(page); script != nil &&
				!strings.Contains(policy, "script-src "+sourceHash([]byte(script[4]))+";") {
				t.Errorf("policy %q does not allow the page's script by its hash", policy)
			}
			if strings.Index(page, "Content-Security-Policy") > strings.Index(page, "<style>") {
				t.Error("the policy comes after the style it governs")
			}
		}
	})
}

// The script's URLs, resolved against the page as a browser does, are the
// operation's own events and monitor URLs; the events URL streams events.
func TestWaitingPageLinksServe(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	ar, err := New(Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(ar.Handler(Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))))
	defer func() {
		close(release)
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ar.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}()
	client := srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	client.Timeout = 10 * time.Second

	get := func(target, accept string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, target, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", accept)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, body
	}

	pageURL := srv.URL + "/reports/1"
	resp, page := get(pageURL, "text/html")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("browser submit = %d, want 202", resp.StatusCode)
	}
	m := pageScript.FindSubmatch(page)
	if m == nil {
		t.Fatalf("no script with its data attributes:\n%s", page)
	}
	base, _ := url.Parse(pageURL)
	resolve := func(ref []byte) string {
		u, err := base.Parse(html.UnescapeString(string(ref)))
		if err != nil {
			t.Fatal(err)
		}
		return u.String()
	}
	_, docBody := get(resp.Header.Get("Location"), "application/json")
	var doc struct{ Links struct{ Self, Events string } }
	if err := json.Unmarshal(docBody, &doc); err != nil {
		t.Fatalf("status document: %v: %s", err, docBody)
	}
	if got := resolve(m[1]); got != doc.Links.Self {
		t.Errorf("script goes to %q, want the monitor URL %q", got, doc.Links.Self)
	}
	if got := resolve(m[2]); got != doc.Links.Events {
		t.Errorf("script subscribes to %q, want the events URL %q", got, doc.Links.Events)
	}

	req, err := http.NewRequest(http.MethodGet, resolve(m[2]), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := client.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer events.Body.Close()
	if ct := events.Header.Get("Content-Type"); events.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("events URL = %d %s, want 200 text/event-stream", events.StatusCode, ct)
	}
}

func TestPrefersHTML(t *testing.T) {
	t.Parallel()
	for accept, want := range map[string]bool{
		"":                 false,
		"*/*":              false,
		"application/json": false,
		"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8": true, // browsers
		"text/html":                               true,
		"application/json, text/html;q=0.5":       false,
		"text/html;q=0.9, application/json;q=0.8": true,
		"text/html;q=0":                           false,
	} {
		r, _ := http.NewRequest("GET", "/", nil)
		r.Header.Set("Accept", accept)
		if got := prefersHTML(r); got != want {
			t.Errorf("Accept %q: prefersHTML = %v, want %v", accept, got, want)
		}
	}
}
