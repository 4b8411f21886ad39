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
	// callback is the url parameter of OData 4.01's callback preference,
	// "" when none was sent; the first one wins.
	callback string
}

// parsePrefer reads every Prefer header of h. Unknown preferences and
// malformed values are ignored, as RFC 7240 section 2 asks.
func parsePrefer(h http.Header) preferences {
	var p preferences
	for _, line := range h.Values("Prefer") {
		for _, pref := range splitUnquoted(line, ',') {
			// Parameters after ";" qualify a preference; only callback's
			// url is read.
			params := splitUnquoted(pref, ';')
			name, value, _ := strings.Cut(strings.TrimSpace(params[0]), "=")
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
			case "callback":
				for _, param := range params[1:] {
					k, v, _ := strings.Cut(strings.TrimSpace(param), "=")
					if strings.EqualFold(strings.TrimSpace(k), "url") && p.callback == "" {
						p.callback = unquote(strings.TrimSpace(v))
					}
				}
			}
		}
	}
	return p
}

// splitUnquoted splits s at every sep outside a quoted string, so that a
// callback URL with commas or semicolons stays whole.
func splitUnquoted(s string, sep byte) []string {
	var parts []string
	quoted, escaped, start := false, false, 0
	for i := range len(s) {
		c := s[i]
		switch {
		case escaped:
			escaped = false
		case quoted && c == '\\':
			escaped = true
		case c == '"':
			quoted = !quoted
		case c == sep && !quoted:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// unquote returns an RFC 9110 quoted-string's content, v as it is when it
// is a token, and "" when it is a quoted string left open (malformed).
func unquote(v string) string {
	if v == "" || v[0] != '"' {
		return v
	}
	if len(v) < 2 || v[len(v)-1] != '"' || strings.HasSuffix(v, `\"`) && !strings.HasSuffix(v, `\\"`) {
		return ""
	}
	var sb strings.Builder
	escaped := false
	for i := 1; i < len(v)-1; i++ {
		if c := v[i]; c == '\\' && !escaped {
			escaped = true
		} else {
			sb.WriteByte(c)
			escaped = false
		}
	}
	return sb.String()
}
