#!/usr/bin/env bash
# Make promtool available for the alert-rule tests (tests/unit/test_deploy_prometheus.py).
# On a Debian machine where we are root (CI), install Debian's `prometheus` package, which ships
# promtool; elsewhere say how, and the two promtool tests skip. Never fails the test run.
set -uo pipefail
if command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing promtool (Debian package prometheus) for the alert-rule tests"
  export DEBIAN_FRONTEND=noninteractive
  if apt-get install -y -q --no-install-recommends prometheus >/tmp/tutti-promtool.log 2>&1 \
    || { apt-get update -q >>/tmp/tutti-promtool.log 2>&1 \
         && apt-get install -y -q --no-install-recommends prometheus >>/tmp/tutti-promtool.log 2>&1; }; then
    command -v promtool >/dev/null 2>&1 && exit 0
  fi
  echo "   could not install it (log: /tmp/tutti-promtool.log); the two promtool tests will skip"
  exit 0
fi
echo "== promtool not found: the two alert-rule unit tests will skip"
echo "   (install it with: sudo apt-get install prometheus, or get promtool from prometheus.io)"
exit 0
