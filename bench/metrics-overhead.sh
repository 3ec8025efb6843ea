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
done
# name → median ns/op, B/op, allocs/op
awk '{ name=$1; sub(/-[0-9]+$/, "", name); ns[name]=ns[name] " " $3; b[name]=$5; a[name]=$7 }
END {
  for (n in ns) {
    k = split(substr(ns[n], 2), v, " "); asort(v)
    med = (k % 2) ? v[(k+1)/2] : (v[k/2] + v[k/2+1]) / 2
    printf "%-52s %10.1f ns/op (median of %d, min %.1f, max %.1f) %6s B/op %4s allocs/op\n", n, med, k, v[1], v[k], b[n], a[n]
  }
}' "$out" | sort
rm -f "$out"
