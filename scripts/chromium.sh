#!/usr/bin/env bash
# Make headless Chromium and chromedriver available for the browser tests of the HTML report
# and the worker's /ui dashboard (tests/integration/worker/test_ui_browser.py,
# tests/unit/test_report_html_browser.py). On a Debian machine where we are root (CI), install
# Debian's `chromium` and `chromium-driver` packages; elsewhere say how, and those tests skip.
# Quiet when both are already there. Never fails the test run.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing chromium and chromium-driver (Debian packages) for the browser tests"
  export DEBIAN_FRONTEND=noninteractive
  log=/tmp/tutti-chromium.log
  if apt-get install -y -q --no-install-recommends chromium chromium-driver >"$log" 2>&1 \
    || { apt-get update -q >>"$log" 2>&1 \
         && apt-get install -y -q --no-install-recommends chromium chromium-driver >>"$log" 2>&1; }; then
    command -v chromium >/dev/null 2>&1 && [ -x /usr/bin/chromedriver ] && exit 0
  fi
  echo "   could not install them (log: $log); the browser tests will skip"
  exit 0
fi
echo "== chromium or chromedriver not found: the browser tests will skip"
echo "   (install them with: sudo apt-get install chromium chromium-driver)"
exit 0
