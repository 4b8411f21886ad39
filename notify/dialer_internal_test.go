package notify

import (
	"errors"
	"net/netip"
	"testing"
)

func TestAddressGuard(t *testing.T) {
	refused := []string{
		"127.0.0.1:80", "[::1]:80", "10.1.2.3:443", "172.16.0.1:443", "192.168.1.1:443", "[fc00::1]:443", "[fd12::1]:443",
		"169.254.169.254:80", "[fe80::1]:80", "0.0.0.0:80", "[::]:80", "224.0.0.1:80", "[ff02::1]:80",
		"100.64.0.1:80", "100.127.255.254:80", "[::ffff:127.0.0.1]:80", "[::ffff:169.254.169.254]:80",
		"[64:ff9b::a00:1]:80", "255.255.255.255:80",
	}
	allowed := []string{"93.184.215.14:443", "[2606:2800:21f:cb07:6820:80da:af6b:8b2c]:443", "100.128.0.1:80", "8.8.8.8:53"}
	var g addressGuard
	for _, a := range refused {
		if err := g.control("tcp", a, nil); !errors.Is(err, ErrAddressNotAllowed) {
			t.Errorf("control(%s) = %v, want ErrAddressNotAllowed", a, err)
		}
	}
	for _, a := range allowed {
		if err := g.control("tcp", a, nil); err != nil {
			t.Errorf("control(%s) = %v, want nil", a, err)
		}
	}
	g.allow = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	if err := g.control("tcp", "10.1.2.3:443", nil); err != nil {
		t.Errorf("control of an allowed network = %v, want nil", err)
	}
	if err := g.control("tcp", "192.168.1.1:443", nil); err == nil {
		t.Error("allowing 10.0.0.0/8 allowed 192.168.1.1")
	}
}
