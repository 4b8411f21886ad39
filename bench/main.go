// Command bench is asyncreply's load harness. It measures every scenario
// beside its baseline in the same run, on loopback, with servers in this
// process, and writes the results as Markdown:
//
//	go run ./bench                                      # every scenario; writes bench/RESULTS.md
//	go run ./bench -scenarios accept,poll -out some.md  # some of them
//	go run ./bench -smoke                               # all of them, tiny, into a temporary file
//	go run ./bench -mode outproc                        # every server a process of its own, loaded by wrk
//	go run ./bench -mode outproc -smoke                 # the same, tiny
//
// The out-of-process mode (outproc.go) builds cmd/asyncreply and
// bench/cmd/baseline, starts the gateway and each baseline as processes of
// their own and drives them with wrk, installing Debian's wrk when it is
// missing. It writes a part of the results file of its own, beside the
// in-process one.
//
// The results file's generated part is replaced as a whole, so a run of
// some scenarios writes only those: give it a file of its own with -out.
//
// PostgreSQL scenarios run against TEST_DATABASE_URL (or the usual local
// server), in schemas of their own dropped at the end; without a server
// they are left out. notify-cost publishes to NATS JetStream at -nats
// (NATS_URL, or the usual local server), in a stream of its own deleted
// at the end; without a server it measures webhooks only, and says so. Every scenario stops by itself, bounded in time and
// in requests.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"

	"github.com/asyncreply/asyncreply/internal/testdb"
)

// scenario is one measured comparison, named for -scenarios.
type scenario struct {
	name string
	run  func(context.Context, *env) (section, error)
}

var scenarios = []scenario{
	{"accept", acceptScenario},
	{"poll", pollScenario},
	{"notify", notifyScenario},
	{"gateway", gatewayScenario},
	{"capacity", capacityScenario},
	{"retention", retentionScenario},
	{"notify-cost", notifyCostScenario},
	{"sqlite-ceiling", sqliteCeilingScenario},
}

func scenarioNames() []string {
	var names []string
	for _, s := range scenarios {
		names = append(names, s.name)
	}
	return names
}

func main() {
	if err := mainErr(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func mainErr(args []string) error {
	flags := flag.NewFlagSet("bench", flag.ContinueOnError)
	full := fullOptions()
	var (
		mode      = flags.String("mode", "inprocess", "inprocess: servers and load in this process; outproc: every server a process of its own, loaded by wrk")
		smoke     = flags.Bool("smoke", false, "run every scenario tiny, to check the harness, and write to a temporary file unless -out is given")
		out       = flags.String("out", "bench/RESULTS.md", "the results file; its generated part is replaced, the rest kept")
		names     = flags.String("scenarios", strings.Join(scenarioNames(), ","), "the scenarios to run, comma-separated (outproc: "+strings.Join(outScenarioNames(), ",")+")")
		duration  = flags.Duration("duration", full.duration, "how long each target is measured (outproc: each wrk run, in whole seconds; defaults to 5s)")
		rounds    = flags.Int("rounds", full.rounds, "turns a subject and its baseline take, alternating, within -duration (outproc: each -duration long; defaults to 5)")
		clients   = flags.Int("clients", full.clients, "clients of a closed loop")
		postgres  = flags.String("postgres", testdb.URL(), "PostgreSQL URL; empty leaves PostgreSQL out")
		profile   = flags.String("cpuprofile", "", "notify-cost: write a CPU profile of each of its runs, with and without deliveries, to `PREFIX`-none-ROUND.pprof and PREFIX-notified-ROUND.pprof")
		natsURL   = flags.String("nats", defaultNATS(), "NATS server with JetStream (NATS_URL by default) the delivery scenarios publish to, in a stream of their own; empty or unreachable: webhooks only")
		capacity  = flags.Int("capacity", full.capacity, "slow operations in flight at once")
		retained  = flags.Int("retained", full.retained, "operations retained, and swept, per backend")
		completes = flags.Int("notifications", full.notifications, "completions measured per backend and transport")
	)
	if err := flags.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	flags.Visit(func(f *flag.Flag) { set[f.Name] = true })

	if *mode == "outproc" {
		return mainOutproc(args, set, *smoke, *out, *names, *duration, *rounds, *postgres, *natsURL)
	}
	if *mode != "inprocess" {
		return fmt.Errorf("-mode %q: want inprocess or outproc", *mode)
	}

	opts := full
	if *smoke {
		opts = smokeOptions()
	}
	// Flags given override the smoke sizes as well as the full ones.
	if set["duration"] || !*smoke {
		opts.duration = *duration
	}
	if set["rounds"] || !*smoke {
		opts.rounds = *rounds
	}
	if set["clients"] || !*smoke {
		opts.clients = *clients
	}
	if set["capacity"] || !*smoke {
		opts.capacity = *capacity
	}
	if set["retained"] || !*smoke {
		opts.retained = *retained
	}
	if set["notifications"] || !*smoke {
		opts.notifications = *completes
	}
	opts.postgres = *postgres
	opts.nats = *natsURL
	opts.cpuProfile = *profile
	opts.scenarios = strings.Split(*names, ",")

	return runAndWrite(*out, *smoke && !set["out"], func(ctx context.Context) ([]byte, error) {
		_, generated, err := run(ctx, opts, "go run ./bench "+strings.Join(args, " "), os.Stderr)
		return generated, err
	}, writeResults)
}

// mainOutproc is main in the out-of-process mode; set holds the flags
// given, which override its sizes.
func mainOutproc(args []string, set map[string]bool, smoke bool, out, names string, duration time.Duration, rounds int, postgres, natsURL string) error {
	opts := outprocFull()
	if smoke {
		opts = outprocSmoke()
	}
	if set["duration"] {
		opts.duration = duration
	}
	if set["rounds"] {
		opts.rounds = rounds
	}
	opts.postgres = postgres
	opts.nats = natsURL
	scenarios := outScenarioNames()
	if set["scenarios"] {
		scenarios = strings.Split(names, ",")
	}
	return runAndWrite(out, smoke && !set["out"], func(ctx context.Context) ([]byte, error) {
		_, generated, err := runOutproc(ctx, opts, scenarios, "go run ./bench "+strings.Join(args, " "), os.Stderr)
		return generated, err
	}, writeOutResults)
}

// run runs the scenarios opts names and returns their sections and the
// generated results. PostgreSQL left unreachable is reported on progress,
// and left out.
func run(ctx context.Context, opts options, command string, progress io.Writer) ([]section, []byte, error) {
	for _, name := range opts.scenarios {
		if !slices.Contains(scenarioNames(), name) {
			return nil, nil, fmt.Errorf("unknown scenario %q: choose among %s", name, strings.Join(scenarioNames(), ", "))
		}
	}
	started := time.Now()
	e, err := newEnv(ctx, opts)
	if err != nil && opts.postgres != "" {
		fmt.Fprintf(progress, "bench: leaving PostgreSQL out: %v\n", err)
		opts.postgres = ""
		e, err = newEnv(ctx, opts)
	}
	if err != nil {
		return nil, nil, err
	}
	defer e.close()

	var sections []section
	for _, sc := range scenarios {
		if !slices.Contains(opts.scenarios, sc.name) {
			continue
		}
		begun := time.Now()
		fmt.Fprintf(progress, "bench: %s…\n", sc.name)
		s, err := sc.run(ctx, e)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", sc.name, err)
		}
		fmt.Fprintf(progress, "bench: %s done in %v\n", sc.name, time.Since(begun).Round(time.Millisecond))
		sections = append(sections, s)
	}
	generated := results(sections, machine(ctx, e), strings.TrimSpace(command), opts.rounds, started, time.Since(started))
	return sections, generated, e.close()
}

// runAndWrite runs one mode's scenarios until they end or the process is
// interrupted, and writes their part of the results file with write: out,
// or a temporary file of its own when temporary is set (a smoke run that
// names none).
func runAndWrite(out string, temporary bool, run func(context.Context) ([]byte, error), write func(path string, generated []byte) error) error {
	path := out
	if temporary {
		f, err := os.CreateTemp("", "asyncreply-bench-*.md")
		if err != nil {
			return err
		}
		f.Close()
		path = f.Name()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	started := time.Now()
	generated, err := run(ctx)
	if err != nil {
		return err
	}
	if err := write(path, generated); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s in %v\n", path, time.Since(started).Round(time.Second))
	return nil
}
