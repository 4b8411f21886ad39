package notify_test

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/notify"
)

// A receiver that takes the connection and never answers, or answers its
// head and never ends the body, costs one attempt's Timeout and no more:
// Post returns, the first as a failure, the second as delivered (the
// status says all that matters).
func TestPostToAReceiverThatNeverAnswersReturns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	held := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held <- c // read nothing, answer nothing
		}
	}()
	defer func() {
		for len(held) > 0 {
			(<-held).Close()
		}
	}()
	w := newWebhooks(t, notify.WebhookConfig{AllowNetworks: loopback, Timeout: 200 * time.Millisecond})
	if status, err := w.Post(t.Context(), "http://"+ln.Addr().String()+"/hook", testEvent()); err == nil || status != 0 {
		t.Errorf("Post to a silent receiver = %d, %v; want 0 and an error", status, err)
	}

	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		select { // the body never ends
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	if status, err := w.Post(t.Context(), srv.URL, testEvent()); status != http.StatusOK || err != nil {
		t.Errorf("Post to a receiver whose body never ends = %d, %v; want 200, nil", status, err)
	}
}

// Addresses that are this host or its link in another spelling — an
// IPv6 zone ID, IPv4-mapped IPv6, the unspecified address (which Linux
// connects to the host itself) — are refused before anything is sent.
func TestPostRefusesOtherSpellingsOfThisHost(t *testing.T) {
	reached := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached <- struct{}{} }))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	w := newWebhooks(t, notify.WebhookConfig{})
	for _, target := range []string{
		"http://0.0.0.0:" + port + "/hook",
		"http://[::]:" + port + "/hook",
		"http://[::ffff:127.0.0.1]:" + port + "/hook",
		"http://[::ffff:0.0.0.0]:" + port + "/hook",
		"http://[fe80::1%25lo]:" + port + "/hook",
		"http://[::1%25lo]:" + port + "/hook",
		"http://127.255.255.254:" + port + "/hook",
	} {
		if _, err := w.Post(t.Context(), target, testEvent()); !errors.Is(err, notify.ErrAddressNotAllowed) {
			t.Errorf("Post(%s) = %v, want ErrAddressNotAllowed", target, err)
		}
	}
	select {
	case <-reached:
		t.Error("the receiver was reached")
	default:
	}
}
