package gateway

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/asyncreply/asyncreply"
)

// The handshake through which the application itself decides, per request,
// what becomes asynchronous (the Rails gem's respond_to_async and render
// async:, the Node middleware's res.deferAsync):
//
//  1. The gateway forwards every first arrival with DeferrableHeader, and
//     keeps a copy of its body (up to the request limit) while it streams.
//  2. The application, instead of doing the work, answers 202 with
//     DeferHeader: "1", optionally followed by parameters in seconds,
//     "1; timeout=3600; retention=604800; wait=2". The gateway never shows
//     that answer to the client — nothing of it, its cookies included —
//     but makes the request an operation, exactly as for an asynchronous
//     route, and answers 202 and the monitor URL itself.
//  3. The replay carries OperationHeader and, when the gateway knows where
//     the application can reach it (Config.ProgressURL), ProgressHeader: a
//     URL where the application may POST {"percent": 40, "message": "…"}
//     while it works, valid only while that attempt runs.
//
// Every Asyncreply-* header a client sends is stripped, so that an
// application may trust them, and every one the application answers with
// is stripped from what reaches the client.
const (
	// DeferrableHeader, "1" on a forwarded first arrival, tells the
	// application that it may defer the request.
	DeferrableHeader = "Asyncreply-Deferrable"
	// DeferHeader on the application's 202 answer defers the request.
	DeferHeader = "Asyncreply-Defer"
	// ProgressHeader on a replay is where the application may report its
	// progress.
	ProgressHeader = "Asyncreply-Progress"
)

// handshakePrefix is what every header of the handshake begins with.
const handshakePrefix = "Asyncreply-"

// parseDeferral reads a DeferHeader value: "1" and parameters timeout and
// retention (whole seconds, positive) and wait (whole seconds, zero or
// more). A parameter left out keeps the route's setting (zero options);
// unknown parameters are ignored, as RFC 7240 asks of preferences, so that
// an application may send ones a later gateway knows.
func parseDeferral(v string) (asyncreply.RouteOptions, error) {
	var opts asyncreply.RouteOptions
	value, params, _ := strings.Cut(v, ";")
	if strings.TrimSpace(value) != "1" {
		return opts, fmt.Errorf(`%s: %q: want "1", optionally followed by "; timeout=SECONDS; retention=SECONDS; wait=SECONDS"`, DeferHeader, v)
	}
	for param := range strings.SplitSeq(params, ";") {
		if strings.TrimSpace(param) == "" {
			continue
		}
		name, raw, _ := strings.Cut(param, "=")
		name = strings.ToLower(strings.TrimSpace(name))
		raw = strings.Trim(strings.TrimSpace(raw), `"`)
		var field *time.Duration
		switch name {
		case "timeout":
			field = &opts.Timeout
		case "retention":
			field = &opts.Retention
		case "wait":
			field = &opts.Wait
		default:
			continue
		}
		seconds, err := strconv.ParseUint(raw, 10, 32) // 136 years at most: no overflow below
		if err != nil {
			return opts, fmt.Errorf("%s: %s=%q: want a whole number of seconds", DeferHeader, name, raw)
		}
		if seconds == 0 && name != "wait" {
			return opts, fmt.Errorf("%s: %s=0: want a positive number of seconds, or leave it out for the route's", DeferHeader, name)
		}
		*field = time.Duration(seconds) * time.Second
	}
	return opts, nil
}

// deferral is the error the proxy's ModifyResponse returns when the
// application deferred a first arrival: the proxy then hands the request
// to proxyError, which has not written anything yet and can make it an
// operation.
type deferral struct{ opts asyncreply.RouteOptions }

func (d *deferral) Error() string { return "the application deferred the request" }

// badDeferral is the error for a DeferHeader the gateway cannot follow.
type badDeferral struct{ err error }

func (e *badDeferral) Error() string { return e.err.Error() }
func (e *badDeferral) Unwrap() error { return e.err }

// errDeferredReplay: the application deferred a replay, which it must run.
var errDeferredReplay = errors.New("the application deferred a replayed request (it carried " + OperationHeader + "), which it must run instead")
