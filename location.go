package asyncreply

import (
	"net/http"
	"strings"

	"github.com/asyncreply/asyncreply/internal/netaddr"
)

// monitorURLs are the absolute URLs of one operation's monitor resources.
type monitorURLs struct {
	Self     string `json:"self"`
	Response string `json:"response,omitempty"`
	Events   string `json:"events"`
}

// status is the operation's Operation-Location monitor.
func (u monitorURLs) status() string { return u.Self + "/status" }

func (m *Middleware) monitorURLs(r *http.Request, id string) monitorURLs {
	self := m.origin(r) + m.cfg.Prefix + id
	return monitorURLs{Self: self, Response: self + "/response", Events: self + "/events"}
}

// monitorPath is the path of an operation's monitor URL as clients see it:
// relative links in pages must not depend on a Host header a client chose.
func (m *Middleware) monitorPath(id string) string {
	return m.publicPath + m.cfg.Prefix + id
}

// origin is the scheme and host clients reach this server at: PublicURL when
// configured, else the request's own, corrected by X-Forwarded-Proto and
// X-Forwarded-Host only when the request comes from a trusted proxy. It is
// "" for a request that names no host (HTTP/1.0 allows it): the monitor URLs
// are then relative to the server's root (the public path then), which any
// client can resolve against the URL it asked, rather than "http:///…".
func (m *Middleware) origin(r *http.Request) string {
	if m.cfg.PublicURL != "" {
		return m.cfg.PublicURL
	}
	scheme, host := "http", r.Host
	if r.TLS != nil {
		scheme = "https"
	}
	if netaddr.Trusted(r.RemoteAddr, m.cfg.TrustedProxies) {
		if proto := firstForwarded(r.Header.Get("X-Forwarded-Proto")); proto == "http" || proto == "https" {
			scheme = proto
		}
		if fwdHost := firstForwarded(r.Header.Get("X-Forwarded-Host")); fwdHost != "" && validHost(fwdHost) {
			host = fwdHost
		}
	}
	if host == "" {
		return ""
	}
	return scheme + "://" + host
}

// firstForwarded is the first (client-side) element of a forwarded list.
func firstForwarded(v string) string {
	first, _, _ := strings.Cut(v, ",")
	return strings.ToLower(strings.TrimSpace(first))
}

// validHost rejects forwarded hosts that would break out of the URL.
func validHost(h string) bool {
	return !strings.ContainsAny(h, "/\\@?#<>\"' \t")
}
