package notify

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
)

// ErrAddressNotAllowed is the error of a webhook whose target resolved to
// an address webhooks may not reach (see WebhookConfig.AllowNetworks). It
// is final: such a delivery is not retried.
var ErrAddressNotAllowed = errors.New("notify: the webhook's address is not allowed")

// refusedNetworks are reached only by the operator's explicit leave, on
// top of what netip.Addr's predicates refuse (loopback, private, link-local,
// multicast, unspecified): addresses that name this host or its
// provider's network rather than the internet.
var refusedNetworks = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),     // "this network"
	netip.MustParsePrefix("100.64.0.0/10"), // carrier-grade NAT (RFC 6598)
	netip.MustParsePrefix("192.0.0.0/24"),  // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"), // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),   // reserved, and the broadcast address
	netip.MustParsePrefix("64:ff9b::/96"),  // NAT64: an IPv4 address behind it
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("2002::/16"), // 6to4: an IPv4 address inside
}

// addressGuard decides which addresses a webhook may connect to. It runs
// as the dialer's Control, on the address actually being dialed after DNS
// resolution, so that a name resolving to an internal address — at once,
// or only on the second lookup (DNS rebinding) — is refused all the same.
type addressGuard struct {
	allow []netip.Prefix
}

func (g addressGuard) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %q is not an IP address", ErrAddressNotAllowed, address)
	}
	if ip := ap.Addr().Unmap(); !g.allowed(ip) {
		return fmt.Errorf("%w: %s", ErrAddressNotAllowed, ip)
	}
	return nil
}

func (g addressGuard) allowed(ip netip.Addr) bool {
	for _, p := range g.allow {
		if p.Contains(ip) {
			return true
		}
	}
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return false
	}
	for _, p := range refusedNetworks {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}
