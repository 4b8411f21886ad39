// Package watch fans change notifications out to the watchers of
// operations in one process, for every backend.
package watch

import "sync"

// Hub fans change notifications out to the watchers in this process.
type Hub struct {
	mu       sync.Mutex
	watchers map[string]map[chan struct{}]struct{}
}

// Watch registers a watcher of id, as backend.Backend.Watch returns it.
func (h *Hub) Watch(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	if h.watchers == nil {
		h.watchers = make(map[string]map[chan struct{}]struct{})
	}
	set := h.watchers[id]
	if set == nil {
		set = make(map[chan struct{}]struct{})
		h.watchers[id] = set
	}
	set[ch] = struct{}{}
	h.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			delete(h.watchers[id], ch)
			if len(h.watchers[id]) == 0 {
				delete(h.watchers, id)
			}
		})
	}
}

// Notify wakes the watchers of id.
func (h *Hub) Notify(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.watchers[id] {
		wake(ch)
	}
}

// NotifyAll wakes every watcher: after a lost connection, changes may have
// been missed, and watchers re-read anyway.
func (h *Hub) NotifyAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, set := range h.watchers {
		for ch := range set {
			wake(ch)
		}
	}
}

// Watched reports whether any watcher is registered, so that pollers can
// idle when nobody waits.
func (h *Hub) Watched() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.watchers) > 0
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default: // a wake-up is pending already
	}
}
