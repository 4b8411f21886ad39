package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/asyncreply/asyncreply/client"
)

// getOptions are the get command's flags and its URL.
type getOptions struct {
	url          string
	method       string
	data         dataFlag
	headers      headerList
	output       string
	respondAsync bool
	stdin        io.Reader // read by -d @-
}

func parseGet(args []string, getenv func(string) string, help io.Writer) (*getOptions, error) {
	o := &getOptions{stdin: os.Stdin}
	fs := newCommand("get", help, `Usage: asyncreply get [flags] URL

Sends a request to URL and, when it is answered 202 Accepted, follows the
operation to its end: through its event stream when the server offers one,
else by polling as Retry-After says. Progress is shown on stderr; the final
response's body is written to stdout, or to the file -o names. URL may also
be a monitor URL a 202 gave. Interrupting (Ctrl-C) deletes the operation.

Exit status: 0 for a 2xx response; 1 for a failed operation or any other
status, whose problem title and detail are printed on stderr, while the body
is not written (like curl --fail); 2 for a bad command line.
`)
	fs.StringVar(&o.method, "X", "", "request `method`; default GET, or POST with -d")
	fs.Var(&o.data, "d", "request body: `DATA` itself, @FILE to read a file, @- to read stdin; sets Content-Type: application/x-www-form-urlencoded unless -H sets one")
	fs.Var(&o.headers, "H", "request header `'Name: value'`; repeatable")
	fs.StringVar(&o.output, "o", "", "write the body to `FILE` instead of stdout")
	fs.BoolVar(&o.respondAsync, "respond-async", false, "send Prefer: respond-async, asking for 202 at once rather than a wait")
	flags, positional := interspersed(fs.FlagSet, args)
	if err := fs.parse(flags, getenv); err != nil {
		return nil, err
	}
	switch len(positional) {
	case 0:
		return nil, errors.New("a URL is required, e.g. asyncreply get http://127.0.0.1:8080/reports/42")
	case 1:
		o.url = positional[0]
	default:
		return nil, fmt.Errorf("unexpected argument %q: one URL at a time", positional[1])
	}
	if u, err := url.Parse(o.url); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("URL %q: want an absolute http:// or https:// URL", o.url)
	}
	if o.method == "" {
		o.method = http.MethodGet
		if o.data.set {
			o.method = http.MethodPost
		}
	}
	if _, err := http.NewRequest(o.method, o.url, nil); err != nil {
		return nil, fmt.Errorf("-X: invalid method %q", o.method)
	}
	return o, nil
}

// interspersed separates flags from the other arguments wherever they
// appear, so that "get URL -o FILE" works as well as "get -o FILE URL": the
// flag package stops at the first argument that is not a flag.
func interspersed(fs *flag.FlagSet, args []string) (flags, positional []string) {
	for i := 0; i < len(args); i++ {
		arg := args[i]
		switch {
		case arg == "--":
			return flags, append(positional, args[i+1:]...)
		case len(arg) < 2 || arg[0] != '-':
			positional = append(positional, arg)
		default:
			flags = append(flags, arg)
			name := strings.TrimLeft(arg, "-")
			if strings.Contains(name, "=") {
				continue
			}
			if f := fs.Lookup(name); f == nil || isBoolFlag(f) {
				continue // flag.Parse reports an unknown flag
			}
			if i+1 < len(args) { // the flag's value, even if it starts with "-"
				i++
				flags = append(flags, args[i])
			}
		}
	}
	return flags, positional
}

// isBoolFlag reports whether f takes no value, as package flag decides.
func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

func runGet(ctx context.Context, o *getOptions, stdout, stderr io.Writer) int {
	body, err := o.data.read(o.stdin)
	if err != nil {
		return usageFailure(stderr, "get", fmt.Errorf("-d: %w", err))
	}
	req, err := http.NewRequestWithContext(ctx, o.method, o.url, body)
	if err != nil {
		return usageFailure(stderr, "get", err)
	}
	for _, h := range o.headers.values {
		if h.name == "Host" {
			req.Host = h.value
			continue
		}
		req.Header.Add(h.name, h.value)
	}
	if o.data.set && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}

	base := http.DefaultTransport.(*http.Transport).Clone()
	defer base.CloseIdleConnections()
	bar := newProgressBar(stderr)
	resp, err := client.New(&client.Transport{
		Base:         base,
		RespondAsync: o.respondAsync,
		Progress:     bar.update,
	}).Do(req)
	bar.finish()
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "asyncreply get: interrupted; the operation, if any, was deleted")
		} else {
			fmt.Fprintf(stderr, "asyncreply get: %v\n", err)
		}
		return exitFailure
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		fmt.Fprintf(stderr, "asyncreply get: %s\n", failureSummary(resp))
		return exitFailure
	}
	if err := writeBody(resp.Body, o.output, stdout); err != nil {
		fmt.Fprintf(stderr, "asyncreply get: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// writeBody copies body to the file named output, or to stdout when there
// is none. The file is created only now, so that a failed request leaves an
// earlier one in place.
func writeBody(body io.Reader, output string, stdout io.Writer) error {
	if output == "" {
		if _, err := io.Copy(stdout, body); err != nil {
			return fmt.Errorf("reading the response: %w", err)
		}
		return nil
	}
	f, err := os.Create(output)
	if err != nil {
		return fmt.Errorf("-o: %w", err)
	}
	_, err = io.Copy(f, body)
	if closeErr := f.Close(); err == nil && closeErr != nil {
		err = fmt.Errorf("-o: %w", closeErr)
	}
	return err
}

// failureSummary is the status of a response that is not a success, with
// its problem details' title and detail when it has them.
func failureSummary(resp *http.Response) string {
	summary := resp.Status
	if mediaType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mediaType != "application/problem+json" {
		return summary
	}
	var problem struct{ Title, Detail string }
	if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&problem) != nil {
		return summary
	}
	for _, part := range []string{problem.Title, problem.Detail} {
		if part != "" {
			summary += ": " + printable(part)
		}
	}
	return summary
}

// progressBar shows an operation's progress on stderr: redrawn in place on a
// terminal, a line per change otherwise (a log, a CI job).
type progressBar struct {
	w        io.Writer
	terminal bool
	last     string // the line shown last
}

func newProgressBar(w io.Writer) *progressBar {
	return &progressBar{w: w, terminal: isTerminal(w)}
}

// progressBarWidth is the number of cells of the bar; with the percentage
// and a message cut to maxProgressMessage, a line fits 80 columns.
const (
	progressBarWidth   = 20
	maxProgressMessage = 50
)

func (b *progressBar) update(_ *http.Request, p client.Progress) {
	filled := p.Percent * progressBarWidth / 100
	message := printable(p.Message)
	if message == "" {
		message = printable(p.Status)
	}
	if utf8.RuneCountInString(message) > maxProgressMessage {
		message = string([]rune(message)[:maxProgressMessage-1]) + "…"
	}
	line := fmt.Sprintf("[%s%s] %3d%% %s", strings.Repeat("#", filled), strings.Repeat("-", progressBarWidth-filled), p.Percent, message)
	if line == b.last {
		return
	}
	if b.terminal {
		// Spaces wipe what is left of a longer line before.
		padding := max(utf8.RuneCountInString(b.last)-utf8.RuneCountInString(line), 0)
		fmt.Fprintf(b.w, "\r%s%s", line, strings.Repeat(" ", padding))
	} else {
		fmt.Fprintln(b.w, line)
	}
	b.last = line
}

// finish ends the bar's line on a terminal, so that what follows starts on
// a line of its own.
func (b *progressBar) finish() {
	if b.terminal && b.last != "" {
		fmt.Fprintln(b.w)
	}
}

// isTerminal reports whether w is a terminal (a character device), without
// a dependency for it.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

// printable replaces control characters in text from a server, which could
// otherwise move the cursor or rewrite the terminal's title.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

// dataFlag is -d: a body, @FILE or @-.
type dataFlag struct {
	value string
	set   bool
}

func (d *dataFlag) String() string {
	if d == nil {
		return ""
	}
	return d.value
}

func (d *dataFlag) Set(v string) error {
	d.value, d.set = v, true
	return nil
}

// read returns the body to send, nil without -d.
func (d *dataFlag) read(stdin io.Reader) (io.Reader, error) {
	name, fromFile := strings.CutPrefix(d.value, "@")
	switch {
	case !d.set:
		return nil, nil
	case !fromFile:
		return strings.NewReader(d.value), nil
	case name == "-":
		// Read whole, so that the body has a length and is sent once.
		b, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("reading stdin: %w", err)
		}
		return bytes.NewReader(b), nil
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(b), nil
}

// header is one -H.
type header struct{ name, value string }

// headerList is the repeatable -H flag. It does not take several values from
// the environment, unlike the other repeatable flags: a header's value may
// hold the separator (Cookie: a=1; b=2).
type headerList struct{ values []header }

func (l *headerList) String() string {
	if l == nil {
		return ""
	}
	s := make([]string, len(l.values))
	for i, h := range l.values {
		s[i] = h.name + ": " + h.value
	}
	return strings.Join(s, ", ")
}

func (l *headerList) Set(v string) error {
	name, value, ok := strings.Cut(v, ":")
	name = strings.TrimSpace(name)
	if !ok || name == "" || strings.ContainsAny(name, " \t\r\n") || strings.ContainsAny(value, "\r\n") {
		return fmt.Errorf("want 'Name: value', got %q", v)
	}
	l.values = append(l.values, header{http.CanonicalHeaderKey(name), strings.TrimSpace(value)})
	return nil
}
