package asyncreply

import (
	"net/http"
	"testing"
	"time"
)

func TestParsePrefer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		headers []string
		want    preferences
	}{
		{nil, preferences{}},
		{[]string{"respond-async"}, preferences{respondAsync: true}},
		{[]string{"respond-async, wait=10"}, preferences{respondAsync: true, wait: 10 * time.Second, hasWait: true}},
		{[]string{"Wait = 5"}, preferences{wait: 5 * time.Second, hasWait: true}},
		{[]string{`wait="7"`}, preferences{wait: 7 * time.Second, hasWait: true}},
		{[]string{"wait=3", "wait=9"}, preferences{wait: 3 * time.Second, hasWait: true}}, // first wins
		{[]string{"wait=-1"}, preferences{}},
		{[]string{"wait=soon"}, preferences{}},
		{[]string{"return=minimal; foo=bar, RESPOND-ASYNC"}, preferences{respondAsync: true}},
		{[]string{"handling=lenient"}, preferences{}},
	} {
		h := http.Header{"Prefer": tc.headers}
		if got := parsePrefer(h); got != tc.want {
			t.Errorf("Prefer %q: got %+v, want %+v", tc.headers, got, tc.want)
		}
	}
}

func TestPrefersHTML(t *testing.T) {
	t.Parallel()
	for accept, want := range map[string]bool{
		"":                 false,
		"*/*":              false,
		"application/json": false,
		"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8": true, // browsers
		"text/html":                               true,
		"application/json, text/html;q=0.5":       false,
		"text/html;q=0.9, application/json;q=0.8": true,
		"text/html;q=0":                           false,
	} {
		r, _ := http.NewRequest("GET", "/", nil)
		r.Header.Set("Accept", accept)
		if got := prefersHTML(r); got != want {
			t.Errorf("Accept %q: prefersHTML = %v, want %v", accept, got, want)
		}
	}
}
