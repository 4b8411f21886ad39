// Package netaddr answers the one question the library and the gateway both
// ask of a request's peer: is it one of the proxies whose X-Forwarded-*
// headers are believed.
package netaddr

import (
	"net"
	"net/netip"
)

// Trusted reports whether remoteAddr (a Request.RemoteAddr, "host:port" or
// a bare address) lies in one of trusted.
func Trusted(remoteAddr string, trusted []netip.Prefix) bool {
	if len(trusted) == 0 {
		return false
	}
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	addr = addr.Unmap()
	for _, p := range trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
