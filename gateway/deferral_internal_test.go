package gateway

import (
	"strings"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply"
)

func TestParseDeferral(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		header string
		want   asyncreply.RouteOptions
	}{
		{"1", asyncreply.RouteOptions{}},
		{" 1 ", asyncreply.RouteOptions{}},
		{"1; timeout=3600; retention=604800; wait=2", asyncreply.RouteOptions{Timeout: time.Hour, Retention: 7 * 24 * time.Hour, Wait: 2 * time.Second}},
		{`1;TIMEOUT="60";wait=0`, asyncreply.RouteOptions{Timeout: time.Minute}},
		{"1; wait=5; later-parameter=x", asyncreply.RouteOptions{Wait: 5 * time.Second}},
		{"1;;", asyncreply.RouteOptions{}},
	} {
		got, err := parseDeferral(tc.header)
		if err != nil || got != tc.want {
			t.Errorf("parseDeferral(%q) = %+v, %v; want %+v", tc.header, got, err, tc.want)
		}
	}
	for _, header := range []string{
		"", "0", "yes", "1, timeout=5", "1; timeout=-1", "1; timeout=1.5", "1; timeout=0",
		"1; retention=0", "1; wait=soon", "1; timeout=99999999999",
	} {
		if _, err := parseDeferral(header); err == nil || !strings.Contains(err.Error(), DeferHeader) {
			t.Errorf("parseDeferral(%q) = %v, want an error naming %s", header, err, DeferHeader)
		}
	}
}
