#!/usr/bin/env bash
# Side-by-side HTTP/2-over-TLS benchmark in one run: fastrouter --https vs
# nginx (listen ssl http2, uwsgi_pass), both in front of the same Go
# uwsgi backend, same certificate. Runs alternate (A B A B …) so drift hits
# both equally; prints median req/s, median p99 (from h2load's per-request
# log) and TLS handshakes/s (openssl s_time, new session per connection).
#
#   bench/compare-h2.sh [rounds=3] [requests=50000] [clients=10] [streams=10]
#
# Needs h2load (nghttp2-client), openssl; nginx-light is used when present.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3} N=${2:-50000} C=${3:-10} M=${4:-10}
command -v h2load >/dev/null || { echo "compare-h2.sh: h2load is not installed (apt-get install nghttp2-client)" >&2; exit 1; }
for port in 13031 18443 18444 19191; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "compare-h2.sh: port $port is already in use; stop what listens there first" >&2; exit 1
  fi
done
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench.test \
  -addext subjectAltName=DNS:bench.test -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
go build -o "$tmp/fastrouter" ./cmd/fastrouter
go build -o "$tmp/backend" ./bench/uwsgi-backend
"$tmp/backend" -listen 127.0.0.1:13031 -size 512 >/dev/null & pids+=($!)
"$tmp/fastrouter" --https 127.0.0.1:18443 --tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem" \
  --admin 127.0.0.1:19191 --subscription-server 127.0.0.1:12627 --to bench.test=127.0.0.1:13031 --log-level warn & pids+=($!)
targets=("fastrouter 18443")

if command -v nginx >/dev/null; then
  mkdir -p "$tmp/nginx"
  cat > "$tmp/nginx/nginx.conf" <<CONF
worker_processes auto;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $tmp/nginx; proxy_temp_path $tmp/nginx; fastcgi_temp_path $tmp/nginx;
  uwsgi_temp_path $tmp/nginx; scgi_temp_path $tmp/nginx;
  server {
    listen 127.0.0.1:18444 ssl http2;
    ssl_certificate $tmp/cert.pem; ssl_certificate_key $tmp/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:13031; }
  }
}
CONF
  nginx -c "$tmp/nginx/nginx.conf" -g 'daemon off;' & pids+=($!)
  targets+=("nginx 18444")
fi
sleep 1.5

declare -A rps p99 hs
for ((r = 1; r <= ROUNDS; r++)); do
  for t in "${targets[@]}"; do
    name=${t%% *} port=${t#* }
    out=$(h2load -n "$N" -c "$C" -m "$M" -H ':authority: bench.test' --log-file "$tmp/log" "https://127.0.0.1:$port/")
    ok=$(echo "$out" | awk '/status codes:/ {print $3}')
    r_=$(echo "$out" | awk '/^finished in/ {print $4}')
    # log: start-time status elapsed-µs; p99 of elapsed in ms.
    p=$(awk '{print $3}' "$tmp/log" | sort -n | awk '{a[NR]=$1} END {printf "%.2f", a[int(NR*0.99)]/1000}')
    h=$(openssl s_time -connect "127.0.0.1:$port" -new -time 5 2>/dev/null | awk '/real seconds/ {printf "%.0f", $1/$4; exit}')
    rps[$name]+="$r_ " p99[$name]+="$p " hs[$name]+="$h "
    echo "round $r $name: $r_ req/s, p99 ${p} ms, 2xx $ok/$N, handshakes/s $h"
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo
echo "| router | median req/s | median p99 (ms) | req/s vs fastrouter | TLS handshakes/s |"
echo "|---|---|---|---|---|"
base=$(echo "${rps[fastrouter]}" | median)
for t in "${targets[@]}"; do
  name=${t%% *}
  m=$(echo "${rps[$name]}" | median); p=$(echo "${p99[$name]}" | median); h=$(echo "${hs[$name]}" | median)
  echo "| $name | $m | $p | $(awk -v a="$m" -v b="$base" 'BEGIN {printf "%.2f", a/b}') | $h |"
done
echo
echo "machine: $(nproc) cores, ${ROUNDS} rounds, h2load -n${N} -c${C} -m${M}, TLS 1.3, 512 B body, one backend connection per request"
