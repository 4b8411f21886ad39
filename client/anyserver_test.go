package client_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/client"
)

// The servers in these tests follow the asynchronous request-reply pattern
// by hand, without asyncreply, as other services do.

// poll is what a hand-written monitor saw of one poll.
type poll struct {
	authorization string
	cookie        string
}

// pollRecorder serves a hand-written monitor URL and records its polls.
type pollRecorder struct {
	mu    sync.Mutex
	polls []poll
}

func (p *pollRecorder) record(r *http.Request) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.polls = append(p.polls, poll{r.Header.Get("Authorization"), r.Header.Get("Cookie")})
	return len(p.polls)
}

func (p *pollRecorder) all() []poll {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]poll(nil), p.polls...)
}

// sendTimes is a RoundTripper that records when each request for path
// is sent.
type sendTimes struct {
	base http.RoundTripper
	path string

	mu    sync.Mutex
	times []time.Time
}

func (s *sendTimes) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Path == s.path {
		s.mu.Lock()
		s.times = append(s.times, time.Now())
		s.mu.Unlock()
	}
	return s.base.RoundTrip(req)
}

func (s *sendTimes) all() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.times...)
}

func TestNeverPolledFasterThanTheFloor(t *testing.T) {
	t.Parallel()
	const floor = 30 * time.Millisecond
	const pollsUntilDone = 6
	var monitor pollRecorder
	var submits atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("POST /jobs", func(w http.ResponseWriter, r *http.Request) {
		submits.Add(1)
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Location", "/jobs/1/status") // relative, and no Retry-After
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, "accepted %s", body)
	})
	mux.HandleFunc("GET /jobs/1/status", func(w http.ResponseWriter, r *http.Request) {
		switch n := monitor.record(r); {
		case n == 2:
			// A restarting server: the caller must wait and poll on.
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
		case n < pollsUntilDone:
			w.WriteHeader(http.StatusAccepted)
		default:
			w.Header().Set("Location", "result") // relative to the monitor URL
			w.WriteHeader(http.StatusSeeOther)
		}
	})
	mux.HandleFunc("GET /jobs/1/result", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "the result")
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	// The floor is the client's: the time between sending one poll and
	// the next, read where they are sent — the server's reading of when
	// each arrived moves with how soon it was scheduled.
	sent := &sendTimes{base: srv.Client().Transport, path: "/jobs/1/status"}
	c := client.New(&client.Transport{Base: sent, MinPollInterval: floor})
	req := newRequest(t, http.MethodPost, srv.URL+"/jobs", "payload")
	req.Header.Set("Authorization", "Bearer alice")
	req.Header.Set("Cookie", "session=abc")
	start := time.Now()
	got := do(t, c, req)
	elapsed := time.Since(start)

	if got.code != http.StatusOK || got.body != "the result" {
		t.Errorf("POST /jobs = %d %q, want the result", got.code, got.body)
	}
	if n := submits.Load(); n != 1 {
		t.Errorf("%d submits, want 1", n)
	}
	polls := monitor.all()
	if len(polls) != pollsUntilDone {
		t.Fatalf("%d polls, want %d", len(polls), pollsUntilDone)
	}
	if limit := int(elapsed/floor) + 1; len(polls) > limit {
		t.Errorf("%d polls in %s, more than one per %s floor allows (%d)", len(polls), elapsed, floor, limit)
	}
	times := sent.all()
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < floor {
			t.Errorf("polls %d and %d sent only %s apart, want at least %s", i, i+1, gap, floor)
		}
	}
	for i, p := range polls {
		if p.authorization != "Bearer alice" || p.cookie != "session=abc" {
			t.Errorf("poll %d had Authorization %q and Cookie %q, want the caller's on the same host", i+1, p.authorization, p.cookie)
		}
	}
}

func TestPollAnsweredWithTheResult(t *testing.T) {
	t.Parallel()
	var polls, eventRequests atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("POST /convert", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "/convert/7")
		w.WriteHeader(http.StatusAccepted)
	})
	mux.HandleFunc("GET /convert/7", func(w http.ResponseWriter, r *http.Request) {
		if polls.Add(1) == 1 {
			// A status document answered 200, and an events link that
			// does not work: the caller polls on.
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"status":"Running","progress":{"percent":40,"message":"converting"},"links":{"events":"/convert/7/events"}}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"converted":true}`) // the result itself, not a status document
	})
	mux.HandleFunc("GET /convert/7/events", func(w http.ResponseWriter, r *http.Request) {
		eventRequests.Add(1)
		http.NotFound(w, r)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	var progress []client.Progress
	c := client.New(&client.Transport{
		Base:            srv.Client().Transport,
		MinPollInterval: testMinPoll,
		Progress:        func(_ *http.Request, p client.Progress) { progress = append(progress, p) },
	})
	got := do(t, c, newRequest(t, http.MethodPost, srv.URL+"/convert", "doc"))
	if got.code != http.StatusOK || got.body != `{"converted":true}` {
		t.Errorf("POST /convert = %d %q, want the poll's 200 answer", got.code, got.body)
	}
	if p, e := polls.Load(), eventRequests.Load(); p != 2 || e != 1 {
		t.Errorf("%d polls and %d event stream requests, want 2 and 1 (events given up after a 404)", p, e)
	}
	want := client.Progress{Operation: srv.URL + "/convert/7", Status: "Running", Percent: 40, Message: "converting"}
	if len(progress) != 1 || progress[0] != want {
		t.Errorf("progress %+v, want [%+v]", progress, want)
	}
}

func TestAcceptedWithoutLocationIsReturned(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprint(w, `{"status":"Running","queued":true}`)
	}))
	defer srv.Close()
	c := client.New(&client.Transport{Base: srv.Client().Transport, MinPollInterval: testMinPoll})
	got := do(t, c, newRequest(t, http.MethodPost, srv.URL+"/mail", "hello"))
	if got.code != http.StatusAccepted || got.body != `{"status":"Running","queued":true}` {
		t.Errorf("POST /mail = %d %q, want the 202 as sent, body whole", got.code, got.body)
	}
}

func TestCredentialsStayOnTheirHost(t *testing.T) {
	t.Parallel()
	var elsewhere pollRecorder
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if elsewhere.record(r) == 1 {
			w.WriteHeader(http.StatusAccepted)
			return
		}
		fmt.Fprint(w, "done elsewhere")
	}))
	defer other.Close()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", other.URL+"/operations/1") // another port: another host
		w.WriteHeader(http.StatusAccepted)
	}))
	defer origin.Close()

	c := client.New(&client.Transport{Base: origin.Client().Transport, MinPollInterval: testMinPoll})
	req := newRequest(t, http.MethodGet, origin.URL+"/report", "")
	req.Header.Set("Authorization", "Bearer alice")
	req.Header.Set("Cookie", "session=abc")
	if got := do(t, c, req); got.body != "done elsewhere" {
		t.Fatalf("GET /report = %d %q", got.code, got.body)
	}
	for i, p := range elsewhere.all() {
		if p.authorization != "" || p.cookie != "" {
			t.Errorf("request %d to another host had Authorization %q and Cookie %q, want neither", i+1, p.authorization, p.cookie)
		}
	}
}
