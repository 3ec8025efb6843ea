# fastrouter — see README.md.
.PHONY: build run test bench bench-compare fuzz vulncheck staticcheck release

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
FUZZ_TARGETS = internal/ascii:FuzzFold internal/uwsgi:FuzzNextVar internal/uwsgi:FuzzVars internal/uwsgi:FuzzParseSubscription internal/uwsgi:FuzzAppendVars \
	subscription:FuzzApply subauth:FuzzAdmit subauth:FuzzAdmitRelayed internal/strict:FuzzCheckHead internal/strict:FuzzCheckPseudo internal/strict:FuzzFieldCheck \
	router:FuzzH2Guard router:FuzzBackendResponse router:FuzzScanHead \
	router:FuzzCookieValue internal/proxyproto:FuzzParse router:FuzzParseUwsgiFront router:FuzzRequestID \
	router:FuzzAppendJSONString cmd/fastrouter:FuzzConfigFile cmd/fastrouter:FuzzParseArgs balancer:FuzzLookup balancer:FuzzParseEndpoint tls:FuzzLoadPair tls:FuzzLookup \
	health:FuzzParseStatusLine cluster:FuzzDecodeMessage cluster:FuzzDecodeRawState cluster:FuzzDecodeState cluster:FuzzDecodeBlob \
	acme:FuzzValidKey acme:FuzzParseChallenge acme:FuzzParsePeerRecords internal/chunked:FuzzReader internal/chunked:FuzzDecoder
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; echo "== $$pkg $$name ($(FUZZTIME))"; \
		go test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) ./$$pkg; \
	done

# staticcheck, run by `make test` (scripts/test.sh) on the main module and the
# benchmark harness's. Run as `go run pkg@version` like govulncheck below:
# the version is pinned here and checked against the Go checksum database,
# and staticcheck's own dependencies stay out of the router's go.mod.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
staticcheck:
	go run $(STATICCHECK) ./...
	cd bench && go run $(STATICCHECK) ./...

# Known vulnerabilities in the dependencies and the standard library. Needs
# https://vuln.go.dev (not reachable from every build machine, so not part
# of `make test`).
GOVULNCHECK ?= golang.org/x/vuln/cmd/govulncheck@v1.8.0
vulncheck:
	go run $(GOVULNCHECK) ./...

# Release binaries: static (CGO_ENABLED=0), reproducible paths (-trimpath),
# one per platform in dist/, with dist/SHA256SUMS. VERSION defaults to
# `git describe`; set it to the tag when releasing (make release VERSION=v0.1.0).
RELEASE_PLATFORMS ?= linux/amd64 linux/arm64
release:
	rm -rf dist && mkdir -p dist
	@set -e; for p in $(RELEASE_PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; out=dist/fastrouter-$(VERSION)-$$os-$$arch; \
		echo "== $$out"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch go build -trimpath -ldflags "$(LDFLAGS)" -o $$out ./cmd/fastrouter; \
	done
	go run ./cmd/fastrouter man > dist/fastrouter.1
	cd dist && sha256sum fastrouter-* fastrouter.1 > SHA256SUMS
	@cat dist/SHA256SUMS
