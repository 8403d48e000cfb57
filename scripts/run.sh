#!/usr/bin/env bash
# `make run`: the whole local loop. Brings up Kafka + the registry, creates topics, registers the
# schemas, then runs the pipeline's processes and demo traffic until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TUTTI="$VENV/bin/tutti"

"$TUTTI" stack up
eval "$("$TUTTI" stack env)"
"$TUTTI" topics create
"$TUTTI" schemas register

echo
echo "== demo traffic (Ctrl-C to stop; the stack keeps running: 'make stack-down' stops it)"
exec "$TUTTI" demo --customers 200 --rate 50
