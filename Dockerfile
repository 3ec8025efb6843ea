# Multi-stage build: a static fastrouter binary on a minimal, non-root image.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/fastrouter ./cmd/fastrouter

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/fastrouter /usr/local/bin/fastrouter
COPY configs/fastrouter.yaml /etc/fastrouter/fastrouter.yaml
USER nonroot:nonroot
# HTTP (and h2c), subscriptions (UDP), admin. For HTTPS add --https
# 0.0.0.0:8443 with --tls-cert/--tls-key or --tls-dir mounted from a secret.
EXPOSE 8080 2626/udp 9191
# The router is PID 1 here: SIGTERM drains and exits (roll replicas to
# deploy); SIGUSR2's in-place binary upgrade is for hosts (systemd), since
# the old process's exit would end the container.
# In a container, listen on all interfaces; restrict who may subscribe with
# your network policy (see SECURITY notes in README).
ENTRYPOINT ["/usr/local/bin/fastrouter"]
CMD ["--config", "/etc/fastrouter/fastrouter.yaml", "--http", "0.0.0.0:8080", "--subscription-server", "0.0.0.0:2626", "--admin", "0.0.0.0:9191"]
