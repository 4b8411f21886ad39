// Package asyncreply turns slow HTTP endpoints into asynchronous ones without
// rewriting them: a request to a marked endpoint is answered 202 Accepted with
// a URL to poll, runs in the background, and its response is stored for the
// client to collect, then expires.
//
// # The replay model
//
// An operation is the original request, replayed later through the same
// application. When a request reaches an endpoint wrapped with Async (or a
// handler calls Defer), the Middleware records the request — method, URL,
// headers with cookies and Authorization, body — stores it in the Backend and
// answers 202. A worker then replays the recorded request through the wrapped
// application: its own middleware runs again, so sessions, authentication and
// request-scoped values work as in a synchronous request, and the handler's
// response is recorded and stored.
//
// Handlers are written as ordinary synchronous http.Handlers:
//
//	ar, err := asyncreply.New(asyncreply.Config{})
//	mux.Handle("GET /reports/{id}", asyncreply.Async(showReport))
//	http.ListenAndServe(addr, ar.Handler(mux)) // outermost
//
// Whatever a handler does before it is deferred happens again on replay,
// so deferral must come before real work. Execution is at least once: a
// durable backend runs an operation again when a worker dies mid-run; the
// first completed attempt's response is the one stored.
//
// # The protocol clients see
//
// A submitted request gets 202 Accepted with Location (the monitor URL),
// Retry-After and a JSON status document — or, for browsers, a waiting page
// that refreshes itself. Polling the monitor URL answers 202 while the
// operation runs, 303 See Other to Location+"/response" once it succeeded,
// and the error a synchronous caller would have seen (500, 504, as
// application/problem+json) once it failed. A client that follows redirects
// and polls while it sees 202 ends with exactly the synchronous response.
//
// The response is served verbatim, but as a synchronous caller would have
// received it once: its Set-Cookie headers go to the first read only, so
// that reading it again after a logout does not log the user back in. It
// carries Expires, when it will be deleted, and Cache-Control: private,
// no-cache unless the application set its own, which is made private when
// Config.Owner binds operations to their callers. An operation submitted
// with HEAD is deferred like any other; its response is the application's
// status and headers without a body or a Content-Length promising one. A
// response stored with another Config.Key than the current one is a 500
// "Encryption key changed" on the poll and the response alike.
//
// The 202 also carries Operation-Location: Location+"/status", a monitor
// that answers 200 and the status document whatever the state and never
// redirects — its resourceLocation names the response once the operation
// succeeded — for pollers, such as Azure's SDKs, that read a 303 after a
// GET as a failure.
//
// Clients may send Prefer: respond-async, Prefer: wait=N (on submit, answer
// directly if ready within N seconds; on a poll, long-poll up to N seconds)
// and Idempotency-Key (scoped by owner, or without Config.Owner by the
// request's cookies and Authorization). DELETE on the monitor URL cancels
// the operation and forgets it; Location+"/events" streams the status
// document as Server-Sent Events. Where operations are owner-bound
// (Config.Owner), GET on the Prefix itself lists the caller's own
// operations, newest first, paged as Google AIP-151's ListOperations is.
// Long-polls and event streams are bounded in number (Config.MaxWatches,
// Config.MaxWatchesPerOwner); past the bound they are answered 503 or 429
// with Retry-After.
//
// # Tracing
//
// With an OpenTelemetry SDK set up (Config.TracerProvider, or the global
// provider), an operation is one trace: SubmitSpanName under the request
// that made it, ReplaySpanName for each attempt, a child of the submit's
// and linked to it — the submit's trace context is stored, sealed, in the
// recorded request, so a worker in another process continues the trace —
// and CollectSpanName for each read of the response, linked to the replay
// that stored it. The replayed request carries the replay span's
// traceparent in place of the client's, so the application's own spans
// join the trace. Without an SDK nothing is traced and nothing allocated.
//
// # Backends
//
// Operations live in a Backend. The default, package backend/memory, keeps
// them in the process and loses them on restart. The backend package defines
// the interface for other stores, and backend/backendtest is the conformance
// suite each of them passes.
package asyncreply
