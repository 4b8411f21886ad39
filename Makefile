# What CI runs (.ci/run is `make deps ci`), one target per step, so that a
# contributor runs exactly the same commands. See CONTRIBUTING.md.

# staticcheck is pinned and run with `go run`: nothing to install, the same
# version everywhere.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: ci deps lint test js rails bench bench-outproc

# js before test: its npm ci installs the Express that the end-to-end
# tests' Express application (e2e/testdata/express) loads.
ci: lint js test rails

# The test suites' own dependencies from Debian: Rails and Puma for the
# end-to-end tests (e2e/) and the Rails gem (clients/rails, whose progress
# tests serve with WEBrick), Chromium for the browser tests (clients/js).
# wrk for the load harness's out-of-process smoke test (bench/).
# Installed only when missing.
DEBIAN_DEPS := ruby-rails puma ruby-webrick chromium wrk
deps:
	@dpkg -s $(DEBIAN_DEPS) >/dev/null 2>&1 || { \
		apt-get update && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(DEBIAN_DEPS); }

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted" >&2; exit 1; fi
	go vet ./...
	go run $(STATICCHECK) ./...

test:
	go test -race -count=1 ./...

# The JavaScript client against the Go server, and the waiting page and the
# client in Chromium (playwright-core drives Debian's build); with CI set,
# the browser tests fail rather than skip when Chromium is missing.
js:
	cd clients/js && npm ci --no-audit --no-fund && npm test

# The Rails gem's tests (minitest, inside a small Rails app).
rails:
	rake -C clients/rails test

# The load harness: every scenario beside its baseline; writes bench/RESULTS.md.
bench:
	go run ./bench

# The same out of process: the built binary and every baseline in processes
# of their own, loaded by wrk; writes its own part of bench/RESULTS.md.
bench-outproc:
	go run ./bench -mode outproc
