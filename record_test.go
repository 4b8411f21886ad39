package asyncreply_test

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

func TestCredentialsNeverShown(t *testing.T) {
	t.Parallel()
	const bearer, session, queryToken = "secret-bearer-token", "secret-session-cookie", "secret-query-token"
	secrets := []string{bearer, session, queryToken}
	logs := &lockedBuffer{}
	report, reported := newSignal(), make(chan struct{}, 1)
	defer report.fire()
	g := newGate(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+bearer {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "private report")
	})
	defer g.release.fire()
	app := http.NewServeMux()
	app.Handle("GET /reports/{id}", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if report.wait(r.Context()) {
			asyncreply.ReportProgress(r.Context(), 10, "reading")
			reported <- struct{}{}
		}
		g.ServeHTTP(w, r)
	})))
	app.Handle("GET /crash", asyncreply.Async(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("crash") })))
	b := setup(t, asyncreply.Config{
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Owner:  func(r *http.Request) (string, error) { return r.Header.Get("Authorization"), nil },
	}, app)
	creds := []string{"Authorization", "Bearer " + bearer, "Cookie", "session=" + session}

	var seen [][]byte
	r, loc := b.submit(t, http.MethodGet, "/reports/1?access_token="+queryToken, "", creds...)
	seen = append(seen, r.body)
	events := b.openEvents(t, loc, creds...)
	_, _ = events.nextStatus(t)
	report.fire()
	testwait.Recv(t, reported, "the handler to report progress")
	seen = append(seen, b.do(t, http.MethodGet, loc, "", creds...).body)
	seen = append(seen, b.do(t, http.MethodGet, loc, "", append(creds, "Accept", "text/html")...).body)
	g.release.fire()
	done := b.finish(t, loc, creds...)
	if done.code != http.StatusSeeOther {
		t.Fatalf("poll = %s, want 303", done)
	}
	seen = append(seen, done.body)
	for {
		ev, err := events.next()
		if err != nil {
			break
		}
		seen = append(seen, []byte(ev.data))
	}
	if r := b.do(t, http.MethodGet, loc+"/response", "", creds...); string(r.body) != "private report" {
		t.Fatalf("response = %s, want the authorized answer", r)
	}
	_, crash := b.submit(t, http.MethodGet, "/crash", "", creds...)
	seen = append(seen, b.finish(t, crash, creds...).body)

	for _, body := range seen {
		for _, secret := range secrets {
			if bytes.Contains(body, []byte(secret)) {
				t.Errorf("a client-visible document contains %q: %s", secret, body)
			}
		}
	}
	logged := logs.String()
	if !strings.Contains(logged, opID(t, loc)) {
		t.Fatalf("nothing was logged about the operation; the check below would prove nothing:\n%s", logged)
	}
	for _, secret := range secrets {
		if strings.Contains(logged, secret) {
			t.Errorf("the log contains %q:\n%s", secret, logged)
		}
	}
}
