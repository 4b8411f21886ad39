package cli

import (
	"crypto/subtle"
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
	c.StringVar(&o.adminListen, "admin-listen", "", "`address` of an operator listener serving GET /metrics (Prometheus); keep it off the clients' network; empty: none")
	c.StringVar(&o.adminToken, "admin-token", "", "bearer `token` the admin listener requires (Authorization: Bearer TOKEN), 401 without it; prefer ASYNCREPLY_ADMIN_TOKEN to a flag; empty: none")
}

// adminHandler serves the operator's endpoints of gw: GET /metrics. With a
// token, a request without Authorization: Bearer token is answered 401.
func adminHandler(gw *gateway.Gateway, token string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", gw.MetricsHandler())
	if token == "" {
		return mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		given, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(given), []byte(token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="asyncreply admin"`)
			problem.Write(w, http.StatusUnauthorized, "Unauthorized", "The admin listener needs Authorization: Bearer with its --admin-token.")
			return
		}
		mux.ServeHTTP(w, r)
	})
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
	logger.Info("admin listening", "url", "http://"+ln.Addr().String()+"/metrics", "token", o.adminToken != "")
	return func() {
		srv.Close() // scrapes are short; nothing to drain
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
