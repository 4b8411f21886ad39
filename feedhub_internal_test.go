package asyncreply

import (
	"context"
	"net/http"
	"testing"

	"github.com/asyncreply/asyncreply/backend"
)

// A feed that cannot keep up is told so once its buffer is full, and gets
// nothing more, so that its memory stays bounded; other feeds, of its
// owner or another, go on.
func TestFeedThatFallsBehindIsDropped(t *testing.T) {
	m, err := New(Config{Owner: func(*http.Request) (string, error) { return "alice", nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	slow, _, ok := m.feeds.subscribe("alice")
	if !ok {
		t.Fatal("subscribe refused")
	}
	defer m.feeds.unsubscribe(slow)
	other, _, _ := m.feeds.subscribe("bob")
	defer m.feeds.unsubscribe(other)

	for range feedBuffer {
		m.feeds.deliver(&backend.Operation{ID: "a", Owner: "alice"})
	}
	select {
	case <-slow.behind:
		t.Fatal("a feed whose buffer is just full was dropped")
	default:
	}
	m.feeds.deliver(&backend.Operation{ID: "a", Owner: "alice"})
	select {
	case <-slow.behind:
	default:
		t.Fatal("a feed past its buffer was not dropped")
	}
	m.feeds.deliver(&backend.Operation{ID: "a", Owner: "alice"}) // no second close
	m.feeds.deliver(&backend.Operation{ID: "b", Owner: "bob"})
	if got := len(other.changes); got != 1 {
		t.Errorf("bob's feed holds %d changes, want 1", got)
	}
	if got := len(slow.changes); got != feedBuffer {
		t.Errorf("the dropped feed holds %d changes, want its buffer's %d", got, feedBuffer)
	}
}
