package cli

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/asyncreply/asyncreply/gateway"
	"github.com/asyncreply/asyncreply/internal/problem"
)

// adminFlags adds --admin-listen and --admin-token, the gateway's and the
// worker's.
func adminFlags(c *command, o *gatewayOptions) {
	c.StringVar(&o.adminListen, "admin-listen", "", "`address` of an operator listener serving the dashboard (/), its API (/api/) and GET /metrics (Prometheus); keep it off the clients' network; empty: none")
	c.StringVar(&o.adminToken, "admin-token", "", "`token` the admin listener requires: Authorization: Bearer TOKEN, or in a browser visit /?token=TOKEN once for a cookie; 401 without it; prefer ASYNCREPLY_ADMIN_TOKEN to a flag; empty: none")
}

// adminCookie is the cookie a browser holds the admin token's proof in,
// set by visiting /?token=TOKEN once: a browser cannot send a bearer
// header to a page it navigates to.
const adminCookie = gateway.AdminCookieName

// adminHandler serves the operator's endpoints of gw: the dashboard, its
// API and GET /metrics. With a token, a request needs Authorization:
// Bearer token, or the adminCookie that visiting /?token=token sets, and
// is answered 401 without either.
//
// The cookie holds a digest of the token, not the token, so that a
// browser's cookie store does not keep the secret itself. It is HttpOnly
// and SameSite=Strict: no script reads it, and no other site's page makes
// the browser send it; the dashboard refuses cross-origin posts besides
// (AdminHandler). The visit that sets it is redirected to the same page
// without the token, so that it leaves the address bar.
func adminHandler(gw *gateway.Gateway, token string) http.Handler {
	admin := gw.AdminHandler()
	if token == "" {
		return admin
	}
	proof := adminCookieValue(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if given := r.URL.Query().Get("token"); given != "" && r.Method == http.MethodGet {
			if !equalSecret(given, token) {
				refuseAdmin(w)
				return
			}
			http.SetCookie(w, &http.Cookie{Name: adminCookie, Value: proof, Path: "/", HttpOnly: true,
				Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
			query := r.URL.Query()
			query.Del("token")
			target := *r.URL
			target.RawQuery = query.Encode()
			// A path of several leading slashes would make the Location a
			// network-path reference to another host.
			target.Path, target.RawPath = "/"+strings.TrimLeft(target.Path, "/\\"), ""
			w.Header().Set("Referrer-Policy", "no-referrer")
			w.Header().Set("Cache-Control", "no-store")
			w.Header().Set("Location", target.RequestURI())
			w.WriteHeader(http.StatusSeeOther)
			return
		}
		bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if ok && equalSecret(bearer, token) {
			admin.ServeHTTP(w, r)
			return
		}
		if c, err := r.Cookie(adminCookie); err == nil && equalSecret(c.Value, proof) {
			admin.ServeHTTP(w, r)
			return
		}
		refuseAdmin(w)
	})
}

func refuseAdmin(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="asyncreply admin"`)
	problem.Write(w, http.StatusUnauthorized, "Unauthorized",
		"The admin listener needs its --admin-token: Authorization: Bearer TOKEN, or in a browser visit /?token=TOKEN once.")
}

// adminCookieValue is what adminCookie holds for token.
func adminCookieValue(token string) string {
	sum := sha256.Sum256([]byte("asyncreply admin cookie\x00" + token))
	return hex.EncodeToString(sum[:])
}

// equalSecret compares digests of the two, so that neither the time it
// takes nor its result tells anything of want's length.
func equalSecret(given, want string) bool {
	g, w := sha256.Sum256([]byte(given)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// serveAdmin serves adminHandler on ln, when there is one, until the
// returned stop is called, which closes it.
func serveAdmin(ln net.Listener, gw *gateway.Gateway, o *gatewayOptions, logger *slog.Logger) (stop func()) {
	if ln == nil {
		return func() {}
	}
	srv := newServer(adminHandler(gw, o.adminToken), o.timeouts, logger)
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(ln); err != http.ErrServerClosed {
			logger.Error("serving the admin listener failed", "error", err)
		}
	}()
	base := "http://" + ln.Addr().String()
	logger.Info("admin listening", "url", base+"/", "metrics", base+"/metrics", "token", o.adminToken != "")
	return func() {
		srv.Close() // scrapes and dashboard polls are short; nothing to drain
		<-served
	}
}

// listenAdmin opens --admin-listen, or returns nil when it is empty.
func listenAdmin(o *gatewayOptions) (net.Listener, error) {
	if o.adminListen == "" {
		return nil, nil
	}
	return net.Listen("tcp", o.adminListen)
}
