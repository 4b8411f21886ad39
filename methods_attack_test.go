package asyncreply_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/asyncreply/asyncreply"
)

// Every new endpoint answers an odd method with 405, an Allow header and
// a problem document — never 500, never the resource, never an action —
// and HEAD where GET is allowed with the head alone.
func TestNewEndpointsRefuseOddMethods(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t, asyncreply.Config{Owner: userFromHeader})
	id, _ := b.fill(t)
	alice := []string{"X-User", "alice"}
	odd := []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions, "TRACE", "PROPFIND", "FOO"}
	for _, c := range []struct {
		url     string
		allowed []string // besides HEAD
		header  []string
	}{
		{b.srv.URL + asyncreply.DefaultPrefix, []string{http.MethodGet, http.MethodHead}, alice},
		{b.srv.URL + asyncreply.DefaultPrefix + "events", []string{http.MethodGet}, alice},
		{b.admin.URL + "/", []string{http.MethodGet, http.MethodHead}, nil},
		{b.admin.URL + "/api/summary", []string{http.MethodGet, http.MethodHead}, nil},
		{b.admin.URL + "/api/operations", []string{http.MethodGet, http.MethodHead}, nil},
		{b.admin.URL + "/metrics", []string{http.MethodGet, http.MethodHead}, nil},
		{b.admin.URL + "/api/operations/" + id + "/cancel", []string{http.MethodPost}, nil},
		{b.admin.URL + "/api/operations/" + id + "/rerun", []string{http.MethodPost}, nil},
	} {
		for _, method := range append(odd, http.MethodGet, http.MethodHead) {
			allowed := false
			for _, a := range c.allowed {
				allowed = allowed || a == method
			}
			if allowed {
				continue
			}
			r := b.do(t, method, c.url, "", c.header...)
			if r.code != http.StatusMethodNotAllowed || r.header.Get("Allow") == "" {
				t.Errorf("%s %s = %s, want 405 with Allow", method, c.url, r)
				continue
			}
			if method != http.MethodHead && r.header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("%s %s: Content-Type %q, want a problem document", method, c.url, r.header.Get("Content-Type"))
			}
		}
		for _, a := range c.allowed {
			if a != http.MethodHead {
				continue
			}
			r := b.do(t, http.MethodHead, c.url, "", c.header...)
			if r.code != http.StatusOK || len(r.body) != 0 {
				t.Errorf("HEAD %s = %s with %d bytes, want 200 and no body", c.url, r, len(r.body))
			}
		}
	}
	// The operation the refused actions named is still there, running.
	if r := b.do(t, http.MethodGet, asyncreply.DefaultPrefix+id+"/status", "", "X-User", "alice"); r.code != http.StatusOK || !strings.Contains(string(r.body), `"Running"`) {
		t.Errorf("after refused methods on its actions, the operation = %s, want it running", r)
	}
}
