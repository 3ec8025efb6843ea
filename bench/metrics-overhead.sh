#!/usr/bin/env bash
# What metrics and the access log cost a request: runs the router's
# benchmarks with and without them, alternating the variants so that a
# busy machine slows all of them alike, and prints the median of ROUNDS
# runs of each.
#
#   bench/metrics-overhead.sh [ROUNDS]     (default 7)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-7}
bin=$(mktemp -d)/router.test
trap 'rm -rf "$(dirname "$bin")"' EXIT
go test -c -o "$bin" ./router/

run() { # benchmark regexp, benchtime
  "$bin" -test.run '^$' -test.bench "$1" -test.benchtime "$2" -test.benchmem | grep '^Benchmark'
}
out=$(mktemp)
for ((i = 1; i <= rounds; i++)); do
  run 'BenchmarkRequestMetrics/metrics=on$' 2000000x >>"$out"
  run 'BenchmarkRequestMetrics/metrics=off$' 2000000x >>"$out"
  run 'BenchmarkProxy/metrics=on$' 5000x >>"$out"
  run 'BenchmarkProxy/metrics=off$' 5000x >>"$out"
  run 'BenchmarkProxy/metrics=on,accesslog=on$' 5000x >>"$out"
  run 'BenchmarkAccessLogLine/encoder=fixed$' 500000x >>"$out"
  run 'BenchmarkAccessLogLine/encoder=slog$' 500000x >>"$out"
  run 'BenchmarkRequestID' 2000000x >>"$out"
done
# name → median ns/op (mawk has no asort: sort by name, then ns/op).
awk '{ name=$1; sub(/-[0-9]+$/, "", name); print name, $3, $5, $7 }' "$out" | sort -k1,1 -k2,2n |
  awk '{ n[$1]++; v[$1, n[$1]] = $2; b[$1] = $3; a[$1] = $4 }
END {
  for (k in n) {
    c = n[k]
    med = (c % 2) ? v[k, (c+1)/2] : (v[k, c/2] + v[k, c/2+1]) / 2
    printf "%-46s %10.1f ns/op  (median of %d; min %.1f, max %.1f)  %s B/op  %s allocs/op\n", k, med, c, v[k, 1], v[k, c], b[k], a[k]
  }
}' | sort
rm -f "$out"
