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

echo "== pytest"
"$VENV/bin/pytest" "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: that is a broken test selection, not a pass" >&2
  exit 1
fi
exit "$rc"
