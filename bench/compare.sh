#!/usr/bin/env bash
# Side-by-side HTTP/1.1 keep-alive benchmark in one run: fastrouter vs nginx
# uwsgi_pass vs uWSGI's http router (when installed), all in front of the same
# Go uwsgi backend. Runs alternate (A B C A B C …) so drift hits all equally;
# prints the median rps and p99 of each and the ratios.
#
#   bench/compare.sh [rounds=3] [seconds=10] [connections=64] [body=512]
#
# Needs wrk; nginx-light and uwsgi-core are used when present.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3} SECS=${2:-10} CONNS=${3:-64} BODY=${4:-512}
command -v wrk >/dev/null || { echo "compare.sh: wrk is not installed (apt-get install wrk)" >&2; exit 1; }
for port in 13031 18080 18081 18082 19191; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "compare.sh: port $port is already in use; stop what listens there first" >&2; exit 1
  fi
done
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

go build -o "$tmp/fastrouter" ./cmd/fastrouter
go build -o "$tmp/backend" ./bench/uwsgi-backend
"$tmp/backend" -listen 127.0.0.1:13031 -size "$BODY" >/dev/null & pids+=($!)
"$tmp/fastrouter" --http 127.0.0.1:18080 --admin 127.0.0.1:19191 --subscription-server 127.0.0.1:12626 \
  --to bench.test=127.0.0.1:13031 --log-level warn & pids+=($!)
targets=("fastrouter http://127.0.0.1:18080/")

if command -v nginx >/dev/null; then
  mkdir -p "$tmp/nginx"
  cat > "$tmp/nginx/nginx.conf" <<CONF
worker_processes auto;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000;
  client_body_temp_path $tmp/nginx; proxy_temp_path $tmp/nginx; fastcgi_temp_path $tmp/nginx;
  uwsgi_temp_path $tmp/nginx; scgi_temp_path $tmp/nginx;
  server {
    listen 127.0.0.1:18081;
    location / { include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:13031; }
  }
}
CONF
  nginx -c "$tmp/nginx/nginx.conf" -g 'daemon off;' & pids+=($!)
  targets+=("nginx http://127.0.0.1:18081/")
fi
if command -v uwsgi >/dev/null; then
  uwsgi --plugin http --master --die-on-term --http 127.0.0.1:18082 --http-to 127.0.0.1:13031 \
    --http-keepalive --http-auto-chunked --disable-logging >"$tmp/uwsgi.log" 2>&1 & pids+=($!)
  targets+=("uwsgi-http http://127.0.0.1:18082/")
fi
sleep 1.5

declare -A rps p99
for ((r = 1; r <= ROUNDS; r++)); do
  for t in "${targets[@]}"; do
    name=${t%% *} url=${t#* }
    out=$(wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -H 'Host: bench.test' "$url")
    errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}')
    rps[$name]+="$(echo "$out" | awk '/Requests\/sec/ {print $2}') "
    p99[$name]+="$(echo "$out" | awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub("us","",v); v/=1000} else if (v ~ /ms$/) {sub("ms","",v)} else if (v ~ /s$/) {sub("s","",v); v*=1000} print v}') "
    echo "round $r $name: $(echo "$out" | awk '/Requests\/sec/ {print $2}') rps, p99 $(echo "$out" | awk '$1=="99%" {print $2}') $errs"
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo
echo "| router | median rps | median p99 (ms) | rps vs fastrouter |"
echo "|---|---|---|---|"
base=$(echo "${rps[fastrouter]}" | median)
for t in "${targets[@]}"; do
  name=${t%% *}
  m=$(echo "${rps[$name]}" | median); p=$(echo "${p99[$name]}" | median)
  echo "| $name | $m | $p | $(awk -v a="$m" -v b="$base" 'BEGIN {printf "%.2f", a/b}') |"
done
echo
echo "machine: $(nproc) cores, ${ROUNDS} rounds × ${SECS}s, wrk -t2 -c${CONNS}, ${BODY} B body, keep-alive clients, one backend connection per request"
