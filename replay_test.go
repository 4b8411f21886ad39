package asyncreply_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

type userKey struct{}

// authenticate is an application's own middleware: it resolves the caller's
// session cookie or bearer token to a user and puts the user in the context.
func authenticate(users map[string]string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			if c, err := r.Cookie("session"); err == nil {
				token = c.Value
			}
		}
		user, ok := users[token]
		if !ok {
			http.Error(w, "who are you?", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, user)))
	})
}

func TestReplayRunsTheApplicationsMiddleware(t *testing.T) {
	t.Parallel()
	users := map[string]string{"tok-alice": "Alice", "tok-bob": "Bob"}
	g := newGate(func(w http.ResponseWriter, r *http.Request) {
		user, _ := r.Context().Value(userKey{}).(string)
		fmt.Fprintf(w, "dashboard of %s", user)
	})
	defer g.release.fire()
	b := setup(t, asyncreply.Config{}, authenticate(users, route("GET /dashboard", asyncreply.Async(g))))

	if r := b.do(t, http.MethodGet, "/dashboard", ""); r.code != http.StatusUnauthorized {
		t.Fatalf("anonymous request = %s, want the application's 401 before any deferral", r)
	}
	_, alice := b.submit(t, http.MethodGet, "/dashboard", "", "Cookie", "session=tok-alice")
	_, bob := b.submit(t, http.MethodGet, "/dashboard", "", "Authorization", "Bearer tok-bob")
	// Both replays are running at once before either may answer.
	testwait.Recv(t, g.started, "a replay to start")
	testwait.Recv(t, g.started, "the other replay to start")
	g.release.fire()

	for _, tc := range []struct{ loc, want string }{{alice, "dashboard of Alice"}, {bob, "dashboard of Bob"}} {
		if r := b.finish(t, tc.loc); r.code != http.StatusSeeOther {
			t.Fatalf("poll = %s, want 303", r)
		}
		if r := b.do(t, http.MethodGet, tc.loc+"/response", ""); r.code != http.StatusOK || string(r.body) != tc.want {
			t.Errorf("response = %s, want 200 %q", r, tc.want)
		}
	}
}

func TestDeferInsideAHandler(t *testing.T) {
	t.Parallel()
	runs := make(chan string, 8)
	export := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("big") == "1" && asyncreply.Defer(w, r) {
			runs <- "deferred"
			return
		}
		id, replay := asyncreply.OperationID(r.Context())
		runs <- fmt.Sprintf("replay=%t", replay)
		fmt.Fprintf(w, "export big=%q replay=%t id=%s", r.URL.Query().Get("big"), replay, id)
	})
	b := setup(t, asyncreply.Config{}, route("GET /export", export))

	t.Run("small requests answer synchronously", func(t *testing.T) {
		r := b.do(t, http.MethodGet, "/export", "")
		if r.code != http.StatusOK || string(r.body) != `export big="" replay=false id=` || r.header.Get("Location") != "" {
			t.Errorf("small export = %s, want 200 straight from the handler", r)
		}
		if run := testwait.Recv(t, runs, "the handler"); run != "replay=false" {
			t.Errorf("handler run %q, want one synchronous run", run)
		}
	})

	t.Run("big requests become operations", func(t *testing.T) {
		_, loc := b.submit(t, http.MethodGet, "/export?big=1", "")
		if run := testwait.Recv(t, runs, "the first arrival"); run != "deferred" {
			t.Errorf("first arrival %q, want deferred", run)
		}
		if r := b.finish(t, loc); r.code != http.StatusSeeOther {
			t.Fatalf("poll = %s, want 303", r)
		}
		if run := testwait.Recv(t, runs, "the replay"); run != "replay=true" {
			t.Errorf("replay %q, want the handler to go on past Defer", run)
		}
		want := fmt.Sprintf(`export big="1" replay=true id=%s`, opID(t, loc))
		if r := b.do(t, http.MethodGet, loc+"/response", ""); r.code != http.StatusOK || string(r.body) != want {
			t.Errorf("response = %s, want 200 %q", r, want)
		}
	})
}

func TestReplayedBodyIsWhole(t *testing.T) {
	t.Parallel()
	const body = "0123456789-the-whole-request-body-" + "padding-padding-padding"
	firstRead := make(chan string, 1)
	b := setup(t, asyncreply.Config{}, route("POST /echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		head := make([]byte, 10)
		if _, err := io.ReadFull(r.Body, head); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if asyncreply.Defer(w, r) {
			firstRead <- string(head)
			return
		}
		rest, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s|%s", head, rest)
	})))

	_, loc := b.submit(t, http.MethodPost, "/echo", body, "Content-Type", "text/plain")
	if got := testwait.Recv(t, firstRead, "the first arrival"); got != body[:10] {
		t.Fatalf("first arrival read %q, want %q", got, body[:10])
	}
	b.finish(t, loc)
	if r := b.do(t, http.MethodGet, loc+"/response", ""); string(r.body) != body[:10]+"|"+body[10:] {
		t.Errorf("replay read %q, want the whole body %q", r.body, body)
	}
}

// requestShape is what a handler can see of its request.
type requestShape struct {
	Method, Path, RawQuery, Host, RemoteAddr, RequestURI string
	ContentLength                                        int64
	Header                                               http.Header
}

func shapeOf(r *http.Request) requestShape {
	return requestShape{
		Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Host: r.Host, RemoteAddr: r.RemoteAddr,
		RequestURI: r.RequestURI, ContentLength: r.ContentLength, Header: r.Header.Clone(),
	}
}

func TestReplayedRequestKeepsItsShape(t *testing.T) {
	t.Parallel()
	shapes := make(chan requestShape, 2)
	b := setup(t, asyncreply.Config{}, route("PUT /things/{id}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		shapes <- shapeOf(r)
		if asyncreply.Defer(w, r) {
			return
		}
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "stored")
	})))

	_, loc := b.submit(t, http.MethodPut, "/things/42?b=two%20words&a=1&a=3", `{"x":1}`,
		"Host", "shop.example.test:8443",
		"Content-Type", "application/json",
		"X-Multi", "first", "X-Multi", "second",
		"Cookie", "session=abc; theme=dark",
		"Authorization", "Bearer xyz")
	first := testwait.Recv(t, shapes, "the first arrival")
	u, _ := url.Parse(loc) // on the Host the client sent, which does not resolve
	b.finish(t, u.Path)
	replayed := testwait.Recv(t, shapes, "the replay")

	if !reflect.DeepEqual(replayed, first) {
		t.Errorf("replayed request differs from the original:\n replay %+v\n  first %+v", replayed, first)
	}
	if first.Host != "shop.example.test:8443" || first.Header.Get("Authorization") != "Bearer xyz" {
		t.Fatalf("the test server changed the request: %+v", first)
	}
}

func TestOperationID(t *testing.T) {
	t.Parallel()
	ids := make(chan string, 2)
	report := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := asyncreply.OperationID(r.Context())
		if ok == (id == "") {
			id = fmt.Sprintf("inconsistent: %q, %t", id, ok)
		}
		ids <- id
	})
	app := http.NewServeMux()
	app.Handle("GET /async", asyncreply.Async(report))
	app.Handle("GET /sync", report)
	b := setup(t, asyncreply.Config{}, app)

	b.do(t, http.MethodGet, "/sync", "")
	if id := testwait.Recv(t, ids, "the synchronous handler"); id != "" {
		t.Errorf("OperationID of a synchronous request = %q, want none", id)
	}
	_, loc := b.submit(t, http.MethodGet, "/async", "")
	if id := testwait.Recv(t, ids, "the replay"); id != opID(t, loc) {
		t.Errorf("OperationID during replay = %q, want the Location's %q", id, opID(t, loc))
	}
	if id, ok := asyncreply.OperationID(context.Background()); id != "" || ok {
		t.Errorf("OperationID(Background) = %q, %t", id, ok)
	}
}

func TestServeMuxPatternsMatchAgainOnReplay(t *testing.T) {
	t.Parallel()
	app := http.NewServeMux()
	app.Handle("GET /users/{user}/reports/{report...}", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "pattern=%q user=%q report=%q", r.Pattern, r.PathValue("user"), r.PathValue("report"))
	})))
	app.Handle("GET /users/{user}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "profile of %s", r.PathValue("user"))
	}))
	b := setup(t, asyncreply.Config{}, app)

	if r := b.do(t, http.MethodGet, "/users/ann", ""); r.code != http.StatusOK || string(r.body) != "profile of ann" {
		t.Errorf("synchronous route = %s", r)
	}
	_, loc := b.submit(t, http.MethodGet, "/users/ann%20lee/reports/2024/q3", "")
	b.finish(t, loc)
	want := `pattern="GET /users/{user}/reports/{report...}" user="ann lee" report="2024/q3"`
	if r := b.do(t, http.MethodGet, loc+"/response", ""); string(r.body) != want {
		t.Errorf("replayed handler saw %s, want %s", r.body, want)
	}
}

func TestTLSIsKeptOnReplay(t *testing.T) {
	t.Parallel()
	b := newBundle(t, asyncreply.Config{}, route("GET /whoami", asyncreply.Async(http.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "tls=%t", r.TLS != nil)
		}))), httptest.NewTLSServer)

	_, loc := b.submit(t, http.MethodGet, "/whoami", "")
	if !strings.HasPrefix(loc, "https://") {
		t.Errorf("Location = %q, want https for a TLS request", loc)
	}
	b.finish(t, loc)
	if r := b.do(t, http.MethodGet, loc+"/response", ""); string(r.body) != "tls=true" {
		t.Errorf("replayed handler saw %s, want tls=true", r.body)
	}
}
