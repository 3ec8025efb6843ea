# Multi-stage build: a static fastrouter binary on a minimal, non-root image.
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" -t fastrouter .
# See docs/operations.md#docker.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The version --version, the status page and the stats server show.
# (A commit can be stamped the same way once the binary has a variable for it.)
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/fastrouter ./cmd/fastrouter

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="fastrouter" \
      org.opencontainers.image.description="Load-balancing front router for uWSGI nodes that join by subscription" \
      org.opencontainers.image.source="https://github.com/fastrouter/fastrouter" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/fastrouter /usr/local/bin/fastrouter
COPY configs/fastrouter.yaml /etc/fastrouter/fastrouter.yaml
COPY LICENSE /usr/share/doc/fastrouter/LICENSE
USER nonroot:nonroot
# HTTP (and h2c) and subscriptions (UDP). For HTTPS add --https 0.0.0.0:8443
# with --tls-cert/--tls-key or --tls-dir mounted from a secret.
EXPOSE 8080 2626/udp
# The admin API (status page, /metrics, POST/DELETE on pools) stays on the
# container's loopback by default: its reads have no authentication. To
# scrape or drive it from outside, publish it with a token file, e.g.
#   --admin 0.0.0.0:9191 --admin-token-file /run/secrets/fastrouter-admin-token
# and keep the port on a private network (see docs/security.md).
# The subscription server listens on all interfaces so nodes in other
# containers can subscribe: restrict it with --subscription-allow,
# --node-allow and/or --subscriptions-sign-check, or your network policy
# (the router logs a SECURITY WARNING at start while it is open).
#
# HEALTHCHECK: distroless has no shell or curl; a `fastrouter health`
# subcommand (GET /healthz on the loopback admin listener) is planned for it:
#   HEALTHCHECK --interval=10s --timeout=3s CMD ["/usr/local/bin/fastrouter", "health"]
# Until then, let the orchestrator probe the HTTP port or /healthz.
#
# The router is PID 1 here: SIGTERM drains and exits (roll replicas to
# deploy); SIGUSR2's in-place binary upgrade is for hosts (systemd), since
# the old process's exit would end the container.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/fastrouter"]
CMD ["--config", "/etc/fastrouter/fastrouter.yaml", "--http", "0.0.0.0:8080", "--subscription-server", "0.0.0.0:2626", "--admin", "127.0.0.1:9191"]
