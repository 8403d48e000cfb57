#!/usr/bin/env bash
# `make test`: lint + types, then pytest against a real broker and registry.
# Starts the local stack unless KAFKA_BOOTSTRAP_SERVERS is given, and stops it afterwards
# (even when tests fail) if this script was the one that started it.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TUTTI="$VENV/bin/tutti"
started_stack=0

cleanup() {
  if [ "$started_stack" = 1 ]; then
    echo "== stopping the local stack"
    "$TUTTI" stack down || true
  fi
}
trap cleanup EXIT

echo "== lint (ruff) and types (mypy)"
"$VENV/bin/ruff" check . || exit 1
"$VENV/bin/ruff" format --check . || exit 1
"$VENV/bin/mypy" || exit 1

if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  echo "== local stack (Kafka with a SASL_SSL listener too, + Apicurio Registry)"
  "$TUTTI" stack status >/dev/null 2>&1 || started_stack=1
  "$TUTTI" stack up --secure || exit 1
  eval "$("$TUTTI" stack env)"
fi

bash scripts/promtool.sh
bash scripts/chromium.sh

no_tests() {
  echo "pytest collected no tests: that is a broken test selection, not a pass" >&2
  exit 1
}

if [ "$#" -gt 0 ]; then  # a selection of the caller's (make test ARGS=...): as given
  echo "== pytest $*"
  "$VENV/bin/pytest" "$@"
  rc=$?
  [ "$rc" = 5 ] && no_tests
  exit "$rc"
fi

# Every test uses its own topics and processes, and most of a live test's time is waiting on
# wall-clock windows and timers, so they run in TUTTI_TEST_JOBS processes (2: with 3, timing-bound
# live tests flaked on this 2-vCPU machine in one run of four) (a file's tests stay
# together, sharing its fixtures). The tests that stop or freeze the shared broker or registry
# (marker `exclusive`) run after, alone.
JOBS=${TUTTI_TEST_JOBS:-2}
DEFAULT="not slow and not reliability"
echo "== pytest, $JOBS processes: every test but the exclusive ones"
"$VENV/bin/pytest" -n "$JOBS" --dist loadfile -m "$DEFAULT and not exclusive"
rc=$?
[ "$rc" = 5 ] && no_tests
echo "== pytest, alone: the tests that stop or freeze the broker or the registry"
"$VENV/bin/pytest" -m "$DEFAULT and exclusive"
rc2=$?
[ "$rc2" = 5 ] && no_tests
[ "$rc" = 0 ] && rc=$rc2
exit "$rc"
