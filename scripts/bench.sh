#!/usr/bin/env bash
# `make bench`: every benchmark in bench/, each printing its numbers and writing results/*.json.
# Not part of `make test` (numbers, not assertions). Starts the local stack if a benchmark needs
# Kafka and stops it afterwards if this script started it.
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

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -m), $(python3 --version)"
rc=0
for bench in bench/bench_*.py; do
  [ -e "$bench" ] || continue
  echo "== $bench"
  "$VENV/bin/python" "$bench" "$@" || rc=1
done
exit "$rc"
