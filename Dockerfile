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
ARG COMMIT=
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" -o /out/fastrouter ./cmd/fastrouter

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
# HTTP (and h2c), subscriptions (UDP). For HTTPS add --https
# 0.0.0.0:8443 with --tls-cert/--tls-key or --tls-dir mounted from a secret.
EXPOSE 8080 2626/udp
# The admin API (/metrics, /api/pools, /healthz) listens on loopback, as
# the configuration file says: the router refuses an admin listener beyond
# loopback without a token. To scrape /metrics from outside, mount a token
# file and add --admin 0.0.0.0:9191 --admin-token-file /run/secrets/admin.token
# (and EXPOSE 9191). The health check asks /healthz on loopback: distroless
# has no curl, so the binary asks itself (fastrouter health; it follows
# --admin's port only when told: health --admin 127.0.0.1:PORT).
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 CMD ["/usr/local/bin/fastrouter", "health"]
# The router is PID 1 here: SIGTERM drains and exits (roll replicas to
# deploy; add --shutdown-delay 5s so the orchestrator sees /healthz fail
# before the listeners close); SIGUSR2's in-place binary upgrade is for
# hosts (systemd), since the old process's exit would end the container.
# In a container, listen on all interfaces; restrict who may subscribe with
# your network policy, --subscription-allow or signed subscriptions (see
# SECURITY.md).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/fastrouter"]
CMD ["--config", "/etc/fastrouter/fastrouter.yaml", "--http", "0.0.0.0:8080", "--subscription-server", "0.0.0.0:2626"]
