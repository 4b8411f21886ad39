package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/backendurl"
	"github.com/asyncreply/asyncreply/internal/testdb"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

// The operations of each run of the publishing test: those published
// normally; those the gateway publishes but never hears acknowledged
// before it is killed; those that finish while the broker is unreachable
// and whose gateway is killed before it could publish them; and one
// submitted to the restarted gateway. 200 in all.
const (
	publishedNormally  = 150
	publishedUnacked   = 10
	publishedAfterKill = 39
	publishedAtLast    = 1
)

// TestPublishedEventsSurviveACrash runs the real gateway publishing to the
// machine's NATS (JetStream) and RabbitMQ through a proxy the test can cut.
// A consumer receives one CloudEvent per operation; the events of
// operations that finished while the broker was unreachable, in a gateway
// killed before it could publish them, arrive once it is restarted. Events
// the broker took but whose acknowledgement the killed gateway never
// heard are published again: RabbitMQ's consumer sees them twice, with the
// same ID, and JetStream's stream drops the second by that ID.
func TestPublishedEventsSurviveACrash(t *testing.T) {
	for _, b := range []struct {
		name  string
		setup func(t *testing.T) *brokerFeed
	}{{"nats", natsFeed}, {"amqp", amqpFeed}} {
		t.Run(b.name, func(t *testing.T) {
			t.Run("sqlite", func(t *testing.T) {
				feed := b.setup(t)
				testPublishedEventsSurviveACrash(t, feed, "sqlite://"+filepath.Join(t.TempDir(), "ops.db"))
			})
			t.Run("postgres", func(t *testing.T) {
				feed := b.setup(t)
				pool := testdb.Pool(t, 2)
				u, err := neturl.Parse(testdb.URL())
				if err != nil {
					t.Fatal(err)
				}
				q := u.Query()
				q.Set("schema", testdb.Schema(t, pool))
				u.RawQuery = q.Encode()
				// A short heartbeat, so that the killed gateway's running
				// deliveries are known dead, and rescued, within seconds.
				testPublishedEventsSurviveACrash(t, feed, u.String(), "--heartbeat", "200ms")
			})
		})
	}
}

func testPublishedEventsSurviveACrash(t *testing.T, feed *brokerFeed, backendURL string, extra ...string) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "report")
	}))
	defer upstream.Close()
	px := newBrokerProxy(t, feed.server)

	args := append([]string{"--upstream", upstream.URL, "--backend", backendURL, "--async", "POST /report",
		"--publish", feed.publishURL(px.addr()), "--webhook-retry", "100ms"}, extra...)
	start := time.Now()
	gw, url := startGateway(t, "127.0.0.1:0", args...)
	c := newEventCounter(feed)
	outbox := openOutbox(t, backendURL)

	// Phase 1: the broker reachable, one event per operation.
	normal := submitReports(t, url, publishedNormally)
	c.awaitEvery(t, normal, testwait.Timeout)
	for _, op := range normal {
		if n := c.count(op.id); n != 1 {
			t.Errorf("operation %s: %d events, want exactly one", op.id, n)
		}
	}
	// The broker's acknowledgements of the last events may still be on
	// their way: cut now, they would be published again.
	awaitDelivered(t, outbox, normal)
	t.Logf("%d operations published by %v", len(normal), time.Since(start))

	// Phase 2: the broker takes events but its acknowledgements are lost
	// on the way back; then operations finish while the broker is
	// unreachable; then the gateway is killed with all their events in the
	// outbox.
	px.mute()
	unacked := submitReports(t, url, publishedUnacked)
	// RabbitMQ's publisher sends one event at a time, waiting for its
	// confirmation, and dials again after the attempt's timeout: on a
	// muted connection the broker takes one event per attempt. NATS's
	// takes them all.
	c.awaitAny(t, unacked, testwait.Timeout)
	px.cut()
	killed := submitReports(t, url, publishedAfterKill)
	for _, op := range slices.Concat(unacked, killed) {
		awaitDone(t, op.location)
	}
	if got := c.received(t, killed); len(got) != 0 {
		t.Fatalf("%d events of operations finished with the broker unreachable arrived", len(got))
	}
	taken := c.received(t, unacked)
	gw.kill(t)
	t.Logf("gateway killed with %d operations unpublished and %d taken by the broker unacknowledged by %v", len(killed)+len(unacked)-len(taken), len(taken), time.Since(start))
	px.restore()
	_, url = startGateway(t, "127.0.0.1:0", args...)
	// SQLite finds the killed process's lock released as the gateway
	// starts; PostgreSQL knows it dead after six heartbeats of silence, and
	// gives its deliveries new jobs at the next sweep, every 15 s.
	c.awaitEvery(t, slices.Concat(unacked, killed), restartLimit)
	if !feed.dropsDuplicates {
		// Published again after the restart: the consumer sees them twice.
		c.awaitAtLeast(t, taken, 2, restartLimit)
	}
	t.Logf("the killed gateway's events published by %v", time.Since(start))

	// The restarted gateway publishes new operations too.
	last := submitReports(t, url, publishedAtLast)
	c.awaitEvery(t, last, testwait.Timeout)

	all := slices.Concat(normal, unacked, killed, last)
	duplicates := 0
	for _, op := range all {
		duplicates += c.count(op.id) - 1
	}
	for _, op := range normal {
		if n := c.count(op.id); n != 1 {
			t.Errorf("operation %s, published before the crash: %d events, want exactly one", op.id, n)
		}
	}
	if feed.dropsDuplicates && duplicates != 0 {
		t.Errorf("%d duplicates in a stream that drops them by ID", duplicates)
	}
	if extra := c.total() - len(all) - duplicates; extra != 0 {
		t.Errorf("%d events of operations this test did not submit", extra)
	}
	t.Logf("%d operations, %d events, %d duplicates, in %v", len(all), c.total(), duplicates, time.Since(start))
}

// submitted is an operation the test submitted: its ID and its absolute
// monitor URL.
type submitted struct{ id, location string }

// submitReports submits n operations to the gateway at url.
func submitReports(t *testing.T, url string, n int) []submitted {
	t.Helper()
	base, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	ops := make([]submitted, 0, n)
	for range n {
		resp, err := probeClient.Post(url+"/report", "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("submit: status %d, want 202", resp.StatusCode)
		}
		location, err := base.Parse(resp.Header.Get("Location"))
		if err != nil {
			t.Fatalf("submit: Location %q: %v", resp.Header.Get("Location"), err)
		}
		ops = append(ops, submitted{id: location.Path[strings.LastIndex(location.Path, "/")+1:], location: location.String()})
	}
	return ops
}

// awaitDone long-polls an operation's monitor URL until it says the
// operation is done (303 to its response), for at most answerLimit.
func awaitDone(t *testing.T, location string) {
	t.Helper()
	client := &http.Client{
		Transport:     probeClient.Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	deadline := time.Now().Add(answerLimit)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest(http.MethodGet, location, nil)
		req.Header.Set("Prefer", "wait=5")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusAccepted:
			continue
		case http.StatusSeeOther:
			return
		default:
			t.Fatalf("GET %s: status %d while waiting for the operation to finish", location, resp.StatusCode)
		}
	}
	t.Fatalf("operation %s not done after %v", location, answerLimit)
}

// openOutbox opens the gateway's backend in the test, to read its outbox:
// the deliveries recorded as done. The gateway must have migrated it.
func openOutbox(t *testing.T, backendURL string) backend.Notifier {
	t.Helper()
	be, err := backendurl.Open(t.Context(), backendURL, backendurl.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stopLimit)
		defer cancel()
		if err := be.Stop(ctx); err != nil {
			t.Errorf("stopping the test's backend: %v", err)
		}
	})
	n, ok := be.(backend.Notifier)
	if !ok {
		t.Fatalf("backend %T keeps no outbox", be)
	}
	return n
}

// awaitDelivered polls the outbox until it records every delivery of ops
// as done, for at most answerLimit: the gateway has heard the broker
// acknowledge every event, and publishes none of them again.
func awaitDelivered(t *testing.T, outbox backend.Notifier, ops []submitted) {
	t.Helper()
	deadline := time.Now().Add(answerLimit)
	for _, op := range ops {
		for {
			deliveries, err := outbox.Deliveries(t.Context(), op.id)
			if err != nil {
				t.Fatalf("reading the deliveries of %s: %v", op.id, err)
			}
			done := len(deliveries) > 0
			for _, d := range deliveries {
				done = done && !d.DeliveredAt.IsZero()
			}
			if done {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("operation %s: deliveries %+v not all recorded done after %v", op.id, deliveries, answerLimit)
			}
			select {
			case <-t.Context().Done():
				t.Fatal(t.Context().Err())
			case <-time.After(20 * time.Millisecond): // the outbox signals nothing: poll it
			}
		}
	}
}

// eventCounter reads a feed's messages as CloudEvents, checks each, and
// counts them by operation.
type eventCounter struct {
	feed *brokerFeed
	// known are the operations the test submitted and awaits, by ID.
	known map[string]submitted
	// ids are the event IDs seen per operation (the event's subject), and
	// events how many of its events arrived.
	ids    map[string]string
	events map[string]int
}

func newEventCounter(feed *brokerFeed) *eventCounter {
	return &eventCounter{feed: feed, known: map[string]submitted{}, ids: map[string]string{}, events: map[string]int{}}
}

// expect records ops as the test's, whose events' data check checks.
func (c *eventCounter) expect(ops []submitted) {
	for _, op := range ops {
		c.known[op.id] = op
	}
}

// awaitEvery reads messages until every one of ops has an event, each
// message within limit of the one before.
func (c *eventCounter) awaitEvery(t *testing.T, ops []submitted, limit time.Duration) {
	t.Helper()
	c.awaitAtLeast(t, ops, 1, limit)
}

// awaitAny reads messages until one of ops has an event, each message
// within limit of the one before.
func (c *eventCounter) awaitAny(t *testing.T, ops []submitted, limit time.Duration) {
	t.Helper()
	c.expect(ops)
	for !slices.ContainsFunc(ops, func(op submitted) bool { return c.events[op.id] > 0 }) {
		c.check(t, testwait.RecvWithin(t, c.feed.messages, limit, "an event of the operations"))
	}
}

// awaitAtLeast reads messages until every one of ops has n events at
// least, each message within limit of the one before.
func (c *eventCounter) awaitAtLeast(t *testing.T, ops []submitted, n int, limit time.Duration) {
	t.Helper()
	c.expect(ops)
	missing := func() int {
		m := 0
		for _, op := range ops {
			if c.events[op.id] < n {
				m++
			}
		}
		return m
	}
	for m := missing(); m > 0; m = missing() {
		c.check(t, testwait.RecvWithin(t, c.feed.messages, limit, fmt.Sprintf("the events of %d more operations", m)))
	}
}

// check parses msg as the CloudEvent of an operation's success and counts
// it. A known operation's event has its status document, with its links,
// as data.
func (c *eventCounter) check(t *testing.T, msg message) {
	t.Helper()
	var ev struct {
		SpecVersion     string          `json:"specversion"`
		ID              string          `json:"id"`
		Source          string          `json:"source"`
		Type            string          `json:"type"`
		Subject         string          `json:"subject"`
		Time            time.Time       `json:"time"`
		DataContentType string          `json:"datacontenttype"`
		Data            json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(msg.body, &ev); err != nil {
		t.Fatalf("a message is not a CloudEvent in JSON (%v): %s", err, msg.body)
	}
	if ev.SpecVersion != "1.0" || ev.Type != "asyncreply.operation.succeeded" || ev.ID == "" || ev.Subject == "" ||
		ev.Time.IsZero() || ev.DataContentType != "application/json" || !strings.HasPrefix(ev.Source, "http://") {
		t.Errorf("event %s is not an operation's success with its attributes: %s", ev.ID, msg.body)
	}
	if msg.messageID != ev.ID {
		t.Errorf("event %s: the broker's message ID is %q, want the event's", ev.ID, msg.messageID)
	}
	if id, ok := c.ids[ev.Subject]; ok && id != ev.ID {
		t.Errorf("operation %s: a duplicate event with ID %s, the first's is %s", ev.Subject, ev.ID, id)
	}
	c.ids[ev.Subject] = ev.ID
	c.events[ev.Subject]++
	op, ok := c.known[ev.Subject]
	if !ok {
		return
	}
	var doc struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Done   bool   `json:"done"`
		Links  struct {
			Self     string `json:"self"`
			Response string `json:"response"`
		} `json:"links"`
	}
	if err := json.Unmarshal(ev.Data, &doc); err != nil {
		t.Fatalf("event %s: data is not a status document (%v): %s", ev.ID, err, ev.Data)
	}
	if doc.ID != op.id || doc.Status != "Succeeded" || !doc.Done || doc.Links.Self != op.location || doc.Links.Response != op.location+"/response" {
		t.Errorf("event %s: data %s, want the succeeded operation's status document with links under %s", ev.ID, ev.Data, op.location)
	}
}

// count is how many events of operation id arrived.
func (c *eventCounter) count(id string) int { return c.events[id] }

// received are those of ops that have an event already, counting the
// messages that arrived so far without waiting for more.
func (c *eventCounter) received(t *testing.T, ops []submitted) []submitted {
	t.Helper()
	c.expect(ops)
	for drained := false; !drained; {
		select {
		case msg := <-c.feed.messages:
			c.check(t, msg)
		default:
			drained = true
		}
	}
	var got []submitted
	for _, op := range ops {
		if c.events[op.id] > 0 {
			got = append(got, op)
		}
	}
	return got
}

// total is how many events arrived.
func (c *eventCounter) total() int {
	n := 0
	for _, e := range c.events {
		n += e
	}
	return n
}
