package cli

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// The admin token never reaches the log — neither the right one given in
// /?token= (which the redirect takes out of the address bar, with no
// Referer), nor a wrong guess, a bearer or a cookie — and a request that
// carries it to the clients' listener does not log it either.
func TestAdminTokenStaysOutOfTheLog(t *testing.T) {
	t.Parallel()
	const token, guess = "s3cret-admin-token", "wrong-guess-token"
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "report")
	}))
	t.Cleanup(upstream.Close)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stdout, stderr := newLines(), newLines()
	exited := make(chan int, 1)
	go func() {
		exited <- Run(ctx, []string{"gateway", "--backend", "memory:", "--upstream", upstream.URL, "--async", "GET /reports/{id}",
			"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--admin-token", token}, env(nil), stdout, stderr)
	}()
	admin := stderr.waitFor(t, regexp.MustCompile(`admin listening" url=(http://\S+)/ `))[1]
	base := stderr.waitFor(t, regexp.MustCompile(`listening" url=(http://\S+)`))[1]
	noRedirects := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	send := func(url string, header ...string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := noRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	resp := send(admin + "/?token=" + token)
	if resp.StatusCode != http.StatusSeeOther || strings.Contains(resp.Header.Get("Location"), token) || resp.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("GET /?token= = %d, Location %q, Referrer-Policy %q; want 303 without the token, no-referrer",
			resp.StatusCode, resp.Header.Get("Location"), resp.Header.Get("Referrer-Policy"))
	}
	send(admin + "/api/summary?token=" + token)
	send(admin + "/?token=" + guess)
	send(admin+"/api/summary", "Authorization", "Bearer "+guess)
	send(admin+"/", "Cookie", adminCookie+"="+guess)
	send(admin+"/", "Authorization", "Bearer "+token)
	send(base+"/reports/1?token="+token, "Authorization", "Bearer "+token)
	cancel() // and every line is written once it has exited
	if code := <-exited; code != 0 {
		t.Errorf("gateway exited %d, want 0", code)
	}

	for _, l := range []*lines{stdout, stderr} {
		for len(l.c) > 0 {
			if line := <-l.c; strings.Contains(line, token) || strings.Contains(line, guess) {
				t.Errorf("the log holds the token or a guess: %s", line)
			}
		}
	}
}
