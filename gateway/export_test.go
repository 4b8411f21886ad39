package gateway

// WithWhoamiWaiter returns cfg with waiting called by each request once it
// waits for the upstream's answer to who its caller is (OwnerUpstream), so
// that a test can hold that answer until every caller provably waits.
func WithWhoamiWaiter(cfg Config, waiting func()) Config {
	cfg.whoamiWaiting = waiting
	return cfg
}
