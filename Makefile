# fastrouter — see README.md.
.PHONY: build run test bench bench-compare fuzz vulncheck

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# The commit fastrouter --version names (unset, the binary reads what Go
# recorded of the VCS, when it did).
COMMIT ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty)
LDFLAGS = -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)

build:
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o bin/fastrouter ./cmd/fastrouter

# Run the router on its defaults (HTTP :8080, subscriptions UDP :2626, admin :9191).
run:
	go run ./cmd/fastrouter

# The whole test suite (installs uWSGI from Debian when missing).
test:
	./scripts/test.sh

bench:
	go test -run=^$$ -bench=. -benchmem ./internal/... ./balancer/ ./router/ ./subscription/

# Side-by-side comparison against nginx uwsgi_pass and uWSGI's http router
# (wrk, h2load; writes bench/results/results.md and rps.png). ~10 minutes.
bench-compare:
	cd bench && go run ./harness

# Every fuzz target for FUZZTIME each (go test also runs their seeds and
# testdata/fuzz corpora on every test run). New crashers land in the
# package's testdata/fuzz: commit them as regression seeds.
FUZZTIME ?= 1m
FUZZ_TARGETS = internal/uwsgi:FuzzNextVar internal/uwsgi:FuzzVars internal/uwsgi:FuzzParseSubscription \
	subscription:FuzzApply subauth:FuzzAdmit subauth:FuzzAdmitRelayed router:FuzzCheckHead router:FuzzCheckPseudo router:FuzzFieldCheck \
	router:FuzzH2Guard router:FuzzBackendResponse router:FuzzScanHead \
	router:FuzzCookieValue router:FuzzParseProxyHeader router:FuzzParseUwsgiFront router:FuzzRequestID \
	router:FuzzAppendJSONString cmd/fastrouter:FuzzConfigFile cmd/fastrouter:FuzzParseArgs balancer:FuzzLookup balancer:FuzzParseEndpoint tls:FuzzLoadPair tls:FuzzLookup \
	health:FuzzParseStatusLine cluster:FuzzDecodeMessage cluster:FuzzDecodeRawState cluster:FuzzDecodeState
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; echo "== $$pkg $$name ($(FUZZTIME))"; \
		go test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) ./$$pkg; \
	done

# Known vulnerabilities in the dependencies and the standard library. Needs
# https://vuln.go.dev (not reachable from every build machine, so not part
# of `make test`).
GOVULNCHECK ?= golang.org/x/vuln/cmd/govulncheck@v1.8.0
vulncheck:
	go run $(GOVULNCHECK) ./...
