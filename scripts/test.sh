#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the integration
# tests drive (real uWSGI 2.0 with the python3 plugin, nginx, promtool, curl,
# h2load, openssl, h2spec, chromium, run headless to check the status page, pebble
# (the ACME tests' CA) and zsh, whose completion script is checked),
# downloads Go modules, then vets, lints (staticcheck) and runs every test
# with the race detector.
# Integration tests fail, never skip, when a tool is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v uwsgi >/dev/null 2>&1 || need_pkgs+=(uwsgi-core)
[ -e /usr/lib/uwsgi/plugins/python3_plugin.so ] || need_pkgs+=(uwsgi-plugin-python3)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_pkgs+=(nginx-light)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
command -v h2load >/dev/null 2>&1 || need_pkgs+=(nghttp2-client)
command -v promtool >/dev/null 2>&1 || need_pkgs+=(prometheus)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
command -v pebble >/dev/null 2>&1 && command -v pebble-challtestsrv >/dev/null 2>&1 || need_pkgs+=(pebble)
command -v zsh >/dev/null 2>&1 || need_pkgs+=(zsh) # the completion script's syntax check
command -v groff >/dev/null 2>&1 || need_pkgs+=(groff-base) # the man page's lint
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: missing ${need_pkgs[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "test.sh: installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

go mod download
# h2spec (TestH2Spec, HTTP/2 conformance) is a Go tool: installed into Go's
# bin directory, which the tests find through PATH.
gobin=$(go env GOBIN)
[ -n "$gobin" ] || gobin="$(go env GOPATH | cut -d: -f1)/bin"
export PATH="$gobin:$PATH"
command -v h2spec >/dev/null 2>&1 || go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible
echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change: $unformatted" >&2
  exit 1
fi
echo "== go vet"
go vet ./...
# The benchmark harness is its own module (its plotting library stays out of
# the router's dependencies): vet it so it keeps building, and test its load
# generator's own measuring (a second or two, loopback only).
(cd bench && go mod download && go vet ./... && go test -count=1 ./...)
echo "== staticcheck"
# Pinned in the Makefile (STATICCHECK); a finding fails the suite. A
# deliberate exception is a //lint:ignore on its line, with the reason.
make staticcheck
if [ "${FASTROUTER_VULNCHECK:-0}" = 1 ]; then
  # Opt-in: govulncheck needs https://vuln.go.dev, which not every build
  # machine reaches.
  echo "== govulncheck"
  make vulncheck
fi
echo "== go test -race"
go test -race -count=1 -timeout 20m ./... "$@"
