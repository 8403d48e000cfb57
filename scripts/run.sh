#!/usr/bin/env bash
# `make run`: the whole local loop. Brings up Kafka + the registry, creates topics, registers the
# schemas, publishes the journey library and the segments, then runs the worker, console senders
# and demo traffic in the background and shows actions, suppressions and exits as they happen. Ctrl-C stops
# everything this script started (the stack keeps running: `make stack-down` stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TUTTI="$VENV/bin/tutti"
LOGS=${TUTTI_RUN_LOGS:-.tutti/logs}
SENDER_CHANNELS=${SENDER_CHANNELS:-"email sms push in_app whatsapp ads"}

"$TUTTI" stack up
eval "$("$TUTTI" stack env)"
export TUTTI_KAFKA_BOOTSTRAP_SERVERS="$KAFKA_BOOTSTRAP_SERVERS"
export TUTTI_KAFKA_SCHEMA_REGISTRY_URL="$SCHEMA_REGISTRY_URL"
export TUTTI_WORKER_API_TOKEN=${TUTTI_WORKER_API_TOKEN:-demo-token}
"$TUTTI" topics create
"$TUTTI" schemas register
"$TUTTI" journeys publish journeys/
"$TUTTI" segments publish segments/   # live sizes: tutti segments size (docs/segments.md)

mkdir -p "$LOGS"
pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "== stopping worker, senders and demo traffic"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup INT TERM EXIT

"$TUTTI" worker >"$LOGS/worker.log" 2>&1 &
pids+=($!)
# One metrics port per sender, from 9108 in this order (deploy/prometheus/prometheus.yml).
metrics_port=${SENDER_METRICS_PORT_BASE:-9108}
for channel in $SENDER_CHANNELS; do
  "$TUTTI" sender --channel "$channel" --provider console --metrics-port "$metrics_port" \
    >"$LOGS/sender-$channel.log" 2>&1 &
  pids+=($!)
  metrics_port=$((metrics_port + 1))
done
# Give the worker a moment to join its group before the traffic starts.
sleep 5
"$TUTTI" demo --customers 200 --rate 50 >"$LOGS/demo.log" 2>&1 &
pids+=($!)

cat <<INFO

== Tutti is running: worker (web view on http://127.0.0.1:6066), console senders ($SENDER_CHANNELS),
   demo traffic. Dashboard: http://127.0.0.1:6066/ui (sign in with the token $TUTTI_WORKER_API_TOKEN).
   Logs in $LOGS/. Metrics: http://127.0.0.1:6066/metrics (worker),
   :${SENDER_METRICS_PORT_BASE:-9108} and up (senders, in the order above). Try in another shell:
     $TUTTI customer show r7-cust-00014     (a demo customer: the first to sign in)
     curl -H "Authorization: Bearer $TUTTI_WORKER_API_TOKEN" http://127.0.0.1:6066/customers/r7-cust-00014
     $TUTTI watch --kind suppress --verbose  (only suppressions, reasons whole; --journey, --channel, --customer)
     $TUTTI report                         (per-journey results)
     $TUTTI control pause cart_abandonment
== actions, suppressions and exits as they happen (Ctrl-C stops everything started here):

INFO
"$TUTTI" watch
