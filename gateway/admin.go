package gateway

import "net/http"

// AdminCookieName is the cookie the asyncreply command's admin listener
// keeps a browser's proof of its --admin-token in. Cookies are not bound
// to a port, so a browser sends it to the listener clients reach as well
// when both are on one host: the gateway strips it from every request it
// forwards or records, so that the upstream never sees it.
const AdminCookieName = "asyncreply_admin"

// AdminHandler serves the operator's dashboard of the gateway's operations,
// its JSON API and GET /metrics (asyncreply's AdminHandler), for an
// operator listener: never for the listener clients reach, since it shows
// and acts on every owner's operations, and it does not authenticate. The
// asyncreply command serves it on --admin-listen, behind --admin-token.
// A re-run is replayed to the upstream like any operation, by whichever
// process executes it.
func (g *Gateway) AdminHandler() http.Handler {
	return g.middleware.AdminHandler()
}
