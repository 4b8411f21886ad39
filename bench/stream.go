package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/asyncreply/asyncreply/internal/benchutil"
)

// defaultNATS is the NATS server, with JetStream, the delivery scenarios
// publish to: NATS_URL, or the usual local server.
func defaultNATS() string { return cmp.Or(os.Getenv("NATS_URL"), "nats://127.0.0.1:4222") }

// benchStream is a JetStream stream of the scenario's own, capturing a
// subject of its own, deleted by close: what a publisher configured with
// publishURL stores its events in.
type benchStream struct {
	conn          *nats.Conn
	js            jetstream.JetStream
	stream        jetstream.Stream
	name, subject string
	publishURL    string // nats://host:4222/SUBJECT, for --publish and broker.Open
}

// natsLimit bounds a call to the NATS server.
const natsLimit = 10 * time.Second

// openStream connects to the NATS server at rawURL and creates a stream,
// in files as JetStream keeps them by default, for a new subject.
func openStream(ctx context.Context, rawURL string) (*benchStream, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, errors.New("the NATS URL does not parse")
	}
	conn, err := nats.Connect(rawURL, nats.Timeout(5*time.Second), nats.Name("asyncreply bench"))
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS at %s: %w", redact(rawURL), err)
	}
	js, err := jetstream.New(conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	var b [6]byte
	rand.Read(b[:])
	suffix := hex.EncodeToString(b[:])
	s := &benchStream{conn: conn, js: js, name: "ASYNCREPLY_BENCH_" + suffix, subject: "asyncreply.bench." + suffix}
	cctx, cancel := context.WithTimeout(ctx, natsLimit)
	defer cancel()
	s.stream, err = js.CreateStream(cctx, jetstream.StreamConfig{Name: s.name, Subjects: []string{s.subject}})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("creating a JetStream stream on %s (is JetStream enabled?): %w", redact(rawURL), err)
	}
	u.Path, u.RawQuery = "/"+s.subject, ""
	s.publishURL = u.String()
	return s, nil
}

// stored is the number of messages the stream holds: the distinct events
// published, as the stream drops a copy by its Nats-Msg-Id.
func (s *benchStream) stored(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, natsLimit)
	defer cancel()
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", s.name, err)
	}
	return int64(info.State.Msgs), nil
}

// lags reads every message of the stream and returns, as a Receiver
// would, how long after its transition each event was stored: the
// message's stream timestamp less the event's time.
func (s *benchStream) lags(ctx context.Context) (*benchutil.Receiver, error) {
	want, err := s.stored(ctx)
	if err != nil {
		return nil, err
	}
	r := benchutil.NewReceiver()
	ctx, cancel := context.WithTimeout(ctx, settleLimit)
	defer cancel()
	consumer, err := s.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	for read := int64(0); read < want; {
		batch, err := consumer.Fetch(int(min(want-read, 1000)), jetstream.FetchMaxWait(natsLimit))
		if err != nil {
			return nil, err
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			meta, err := msg.Metadata()
			if err != nil {
				return nil, err
			}
			var ev struct {
				ID   string    `json:"id"`
				Time time.Time `json:"time"`
			}
			if err := json.Unmarshal(msg.Data(), &ev); err != nil || ev.ID == "" {
				return nil, fmt.Errorf("stream %s: a message that is not an event (%v): %.200s", s.name, err, msg.Data())
			}
			r.Record(ev.ID, meta.Timestamp.Sub(ev.Time))
		}
		if err := batch.Error(); err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, fmt.Errorf("stream %s: read %d of its %d messages, then none came", s.name, read, want)
		}
		read += int64(n)
	}
	return r, nil
}

// close deletes the stream and closes the connection.
func (s *benchStream) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), natsLimit)
	defer cancel()
	err := s.js.DeleteStream(ctx, s.name)
	s.conn.Close()
	if err != nil {
		return fmt.Errorf("deleting stream %s: %w", s.name, err)
	}
	return nil
}

// deliveredCounts are the distinct events each destination of a
// scenario's deliveries holds so far, by destination.
type deliveredCounts func(ctx context.Context) (map[string]int64, error)

// countEach counts the events at each destination, by name.
func countEach(destinations map[string]func(context.Context) (int64, error)) deliveredCounts {
	return func(ctx context.Context) (map[string]int64, error) {
		got := map[string]int64{}
		for name, n := range destinations {
			v, err := n(ctx)
			if err != nil {
				return nil, err
			}
			got[name] = v
		}
		return got, nil
	}
}

// waitDelivered waits until every destination counts want events, for
// at most settleLimit, and returns how long that took.
func waitDelivered(ctx context.Context, counts deliveredCounts, want int64) (time.Duration, error) {
	started := time.Now()
	deadline := started.Add(settleLimit)
	ticker := time.NewTicker(5 * time.Millisecond)
	defer ticker.Stop()
	for {
		got, err := counts(ctx)
		if err != nil {
			return 0, err
		}
		var short []string
		for name, n := range got {
			if n < want {
				short = append(short, fmt.Sprintf("%d to %s", n, name))
			}
		}
		if len(short) == 0 {
			return time.Since(started), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%d operations executed, and after %v only %s delivered", want, settleLimit, strings.Join(short, " and "))
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-ticker.C:
		}
	}
}

// lagRow is a row of a deliveries table: a destination's distinct events
// and their lags behind completion.
func lagRow(destination string, expected int64, st benchutil.ReceiverStats) []string {
	return []string{destination, count(int(st.Received)) + " of " + count(int(expected)), count(int(st.Duplicates)),
		ms(st.P50), ms(st.P99), ms(st.Max)}
}
