package asyncreply_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend/memory"
	"github.com/asyncreply/asyncreply/internal/benchutil"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

// held is a handler that holds every run until release fires, announcing
// the first on started; unlike gate, it never blocks on announcing, so
// that any number of runs may pass once released.
type held struct {
	started chan struct{}
	release *signal
}

func newHeld() *held { return &held{started: make(chan struct{}, 1), release: newSignal()} }

func (h *held) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case h.started <- struct{}{}:
	default:
	}
	if h.release.wait(r.Context()) {
		io.WriteString(w, "stored")
	}
}

// A flood of large bodies that no worker keeps up with — the handler holds
// its one worker — is refused with 503 and Retry-After once the default
// bound on the bytes waiting is reached, instead of growing the heap by
// every body (6,000 × 64 KiB took it from 15 MB to 649 MB). Once the
// operations run, new ones are accepted again.
//
// Not parallel: it measures the heap, which other tests would grow.
func TestQueueFullIs503(t *testing.T) {
	h := newHeld()
	defer h.release.fire()
	b := setup(t, asyncreply.Config{Backend: memory.New(memory.Config{Concurrency: 1})}, route("POST /uploads", asyncreply.Async(h)))
	body := strings.Repeat("x", 64<<10)

	heapBefore, _ := benchutil.LiveMemory()
	var accepted []string
	var refused reply
	for refused.code == 0 {
		r := b.do(t, http.MethodPost, "/uploads", body)
		switch r.code {
		case http.StatusAccepted:
			accepted = append(accepted, r.header.Get("Location"))
			if len(accepted) == 1 {
				testwait.Recv(t, h.started, "the first operation to start") // it no longer waits
			}
		case http.StatusServiceUnavailable:
			refused = r
		default:
			t.Fatalf("submit %d = %s, want 202, or 503 once the queue is full", len(accepted)+1, r)
		}
		if len(accepted) > 2*memory.DefaultMaxQueuedBytes/len(body) {
			t.Fatalf("%d bodies of %d KiB accepted and held, with a bound of %d MiB waiting: nothing is refused",
				len(accepted), len(body)>>10, memory.DefaultMaxQueuedBytes>>20)
		}
	}
	if p := wantProblem(t, refused, http.StatusServiceUnavailable); !strings.Contains(p.Title, "waiting") {
		t.Errorf("503 for a full queue titled %q: the title must say that too many operations are waiting, not that the store is down", p.Title)
	}
	if got := refused.header.Get("Retry-After"); got != "1" {
		t.Errorf("503 for a full queue: Retry-After = %q, want %q", got, "1")
	}
	if loc := refused.header.Get("Location"); loc != "" {
		t.Errorf("503 for a full queue carries Location %q: nothing was stored to monitor", loc)
	}
	// Each body takes a little more than its size on the heap, which is
	// what the bound counts.
	waiting := len(accepted) - 1 // the first is running
	if most := memory.DefaultMaxQueuedBytes / len(body); waiting > most || waiting < most*3/4 {
		t.Errorf("%d bodies of %d KiB waiting when the first was refused, want at most %d and not far below: the bytes bound is %d MiB",
			waiting, len(body)>>10, most, memory.DefaultMaxQueuedBytes>>20)
	}
	for range 100 { // the flood goes on, and is refused all along
		if r := b.do(t, http.MethodPost, "/uploads", body); r.code != http.StatusServiceUnavailable {
			t.Fatalf("submit to a full queue = %s, want 503", r)
		}
	}
	heapAfter, _ := benchutil.LiveMemory()
	grown := int64(heapAfter) - int64(heapBefore)
	t.Logf("heap grew %.1f MiB for %d operations of %d KiB accepted and %d refused, with a bound of %d MiB waiting",
		float64(grown)/(1<<20), len(accepted), len(body)>>10, 101, memory.DefaultMaxQueuedBytes>>20)
	// What is not the bodies waiting: the one running, and a few hundred
	// bytes of bookkeeping per operation.
	if slack := int64(8 << 20); grown > memory.DefaultMaxQueuedBytes+slack {
		t.Errorf("heap grew %d MiB with a bound of %d MiB on the bodies waiting, more than %d MiB beyond it",
			grown>>20, memory.DefaultMaxQueuedBytes>>20, slack>>20)
	}

	h.release.fire()
	// One worker runs them in order: once the last is done, none waits.
	if r := b.finish(t, accepted[len(accepted)-1]); r.code != http.StatusSeeOther {
		t.Fatalf("poll of the last accepted operation = %s, want 303", r)
	}
	b.submit(t, http.MethodPost, "/uploads", body)
}

// One owner past its own bound is told so with 429 and Retry-After, while
// others are still accepted; an idempotent retry of one of its operations,
// which stores nothing, is never refused.
func TestOwnerQueueFullIs429(t *testing.T) {
	t.Parallel()
	h := newHeld()
	defer h.release.fire()
	be := memory.New(memory.Config{Concurrency: 1, MaxQueuedPerOwner: 2})
	b := setup(t, asyncreply.Config{Backend: be, Owner: userFromHeader}, route("POST /exports", asyncreply.Async(h)))

	b.submit(t, http.MethodPost, "/exports", "", "X-User", "carol")
	testwait.Recv(t, h.started, "carol's operation to take the one worker")

	_, first := b.submit(t, http.MethodPost, "/exports", "", "X-User", "alice", "Idempotency-Key", "export-1")
	b.submit(t, http.MethodPost, "/exports", "", "X-User", "alice")
	r := b.do(t, http.MethodPost, "/exports", "", "X-User", "alice")
	if p := wantProblem(t, r, http.StatusTooManyRequests); !strings.Contains(p.Title, "waiting") {
		t.Errorf("429 for an owner's full queue titled %q: the title must say that too many operations are waiting", p.Title)
	}
	if got := r.header.Get("Retry-After"); got != "1" {
		t.Errorf("429 for an owner's full queue: Retry-After = %q, want %q", got, "1")
	}

	b.submit(t, http.MethodPost, "/exports", "", "X-User", "bob")
	_, retry := b.submit(t, http.MethodPost, "/exports", "", "X-User", "alice", "Idempotency-Key", "export-1")
	if retry != first {
		t.Errorf("idempotent retry with alice's queue full: Location %q, want the first's %q", retry, first)
	}
}
