package asyncreply

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// preferences are the RFC 7240 Prefer header's preferences asyncreply honours.
type preferences struct {
	respondAsync bool
	wait         time.Duration
	hasWait      bool
}

// parsePrefer reads every Prefer header of h. Unknown preferences and
// malformed values are ignored, as RFC 7240 section 2 asks.
func parsePrefer(h http.Header) preferences {
	var p preferences
	for _, line := range h.Values("Prefer") {
		for pref := range strings.SplitSeq(line, ",") {
			// Parameters after ";" qualify a preference; none of ours has any.
			pref, _, _ = strings.Cut(pref, ";")
			name, value, _ := strings.Cut(strings.TrimSpace(pref), "=")
			name = strings.ToLower(strings.TrimSpace(name))
			value = strings.Trim(strings.TrimSpace(value), `"`)
			switch name {
			case "respond-async":
				p.respondAsync = true
			case "wait":
				seconds, err := strconv.ParseUint(value, 10, 32)
				if err == nil && !p.hasWait { // the first occurrence wins
					p.wait, p.hasWait = time.Duration(seconds)*time.Second, true
				}
			}
		}
	}
	return p
}
