#!/usr/bin/env bash
# `make bench`: `tutti bench` (the worker next to its ceilings, results/bench.json and
# results/bench.md; ARGS="--events 20000" for a short run). `make bench-micro`: the pure-code
# benchmarks in bench/ (decide, sender, analytics), each writing results/bench_*.json.
# Not part of `make test` (numbers, not assertions). Starts the local stack if needed and stops
# it afterwards if this script started it.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TUTTI="$VENV/bin/tutti"
mkdir -p results
started_stack=0
cleanup() { if [ "$started_stack" = 1 ]; then "$TUTTI" stack down || true; fi; }
trap cleanup EXIT

if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  "$TUTTI" stack status >/dev/null 2>&1 || started_stack=1
  "$TUTTI" stack up >/dev/null || exit 1
  eval "$("$TUTTI" stack env)"
fi

if [ "${1:-}" = "--micro" ]; then
  shift
  rc=0
  for bench in bench/bench_*.py; do
    echo "== $bench"
    "$VENV/bin/python" "$bench" "$@" || rc=1
  done
  exit "$rc"
fi
exec "$TUTTI" bench "$@"
