package asyncreply

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/asyncreply/asyncreply/backend"
)

// What serving a stored response needs beyond copying it: which read gets
// its cookies, how caches may keep it, and what to say when it cannot be
// read back. writeResponse, in monitor.go, puts them together.

// deliversCookies reports whether this answer is the first read of op's
// stored response, the one that carries its Set-Cookie headers: a
// synchronous caller received them once, and delivered again they would
// undo what the client did since, a logout for one. The backend decides
// which read is first, across restarts and processes; only a response with
// Set-Cookie costs a write, and only until it is collected.
func (m *Middleware) deliversCookies(ctx context.Context, op *backend.Operation, stored *storedResponse) (bool, error) {
	if len(stored.Header["Set-Cookie"]) == 0 || !op.CollectedAt.IsZero() {
		return false, nil
	}
	ctx, cancel := storeContext(ctx)
	defer cancel()
	return m.cfg.Backend.MarkCollected(ctx, op.ID, m.cfg.now())
}

// responseCacheControl returns the Cache-Control of the /response resource
// given the stored response's own. Without one it is "private, no-cache":
// no shared cache keeps the answer, and a browser asks again before showing
// it, so that it learns of a DELETE or the expiry rather than showing the
// answer from its cache until Expires. The application's own is kept, but
// an owner-bound answer (Config.Owner) is always private: a shared cache
// would hand it to anyone with the URL, past the owner check. "public" (or
// a "private" limited to some fields) becomes "private"; other directives
// stay as they are.
func (m *Middleware) responseCacheControl(stored []string) []string {
	directives := cacheDirectives(stored)
	if len(directives) == 0 {
		return []string{"private, no-cache"}
	}
	if m.cfg.Owner == nil {
		return stored
	}
	kept := make([]string, 0, len(directives)+1)
	private := false
	for _, d := range directives {
		name, _, _ := strings.Cut(d, "=")
		if name = strings.TrimSpace(name); strings.EqualFold(name, "public") || strings.EqualFold(name, "private") {
			if !private {
				kept = append(kept, "private")
				private = true
			}
			continue
		}
		kept = append(kept, d)
	}
	if !private {
		kept = append([]string{"private"}, kept...)
	}
	return []string{strings.Join(kept, ", ")}
}

// cacheDirectives splits Cache-Control values into their directives, minding
// quoted strings, which may hold commas (no-cache="Set-Cookie, X-Token").
func cacheDirectives(values []string) []string {
	var directives []string
	add := func(d string) {
		if d = strings.TrimSpace(d); d != "" {
			directives = append(directives, d)
		}
	}
	for _, v := range values {
		start, quoted := 0, false
		for i := 0; i < len(v); i++ {
			switch c := v[i]; {
			case c == '\\' && quoted:
				i++ // a quoted-pair: the next byte is literal
			case c == '"':
				quoted = !quoted
			case c == ',' && !quoted:
				add(v[start:i])
				start = i + 1
			}
		}
		add(v[start:])
	}
	return directives
}

// readable reports whether op's stored response can be read back, and
// answers as writeUnreadable when it cannot: a monitor never points a
// client (303, resourceLocation) at a response that then fails. It checks
// the key without decrypting the response.
func (m *Middleware) readable(w http.ResponseWriter, op *backend.Operation) bool {
	if err := m.sealer.check(op.ID, op.Response); err != nil {
		m.writeUnreadable(w, op, err)
		return false
	}
	return true
}

// writeUnreadable answers, on the poll and on /response alike, for a stored
// response that cannot be read back: a 500 that tells the operator whether
// the encryption key changed since it was stored, which restoring the key
// repairs, or the response is corrupt.
func (m *Middleware) writeUnreadable(w http.ResponseWriter, op *backend.Operation, err error) {
	if errors.Is(err, errOtherKey) {
		m.cfg.Logger.Error("asyncreply: stored response was encrypted with another key; it can be read only with the key it was stored with",
			"operation", op.ID)
		writeProblem(w, http.StatusInternalServerError, "Encryption key changed",
			"The response was stored encrypted with another key than the server's current one, and cannot be read with it.")
		return
	}
	m.cfg.Logger.Error("asyncreply: stored response unreadable", "operation", op.ID, "error", err)
	writeProblem(w, http.StatusInternalServerError, "Stored response unreadable",
		"The stored response could not be read back.")
}
