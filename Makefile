# fastrouter — see README.md.
.PHONY: build run test bench bench-compare fuzz

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

build:
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/fastrouter ./cmd/fastrouter

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
