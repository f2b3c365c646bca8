#!/usr/bin/env bash
# Everything the test suite needs: the package with its test extras, the
# Prometheus server + promtool (Debian package) for the metrics tests, (as root)
# what the namespaced lab tests use (scripts/lab-deps.sh), and js-libp2p for the
# interop tests (tests/interop/js, from its package-lock.json).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # Debian's package may start a system service; the tests start their own servers.
  pkill -x prometheus 2>/dev/null || true
fi
if [ "$(id -u)" -eq 0 ]; then
  scripts/lab-deps.sh
fi
python -m pip install -q -e '.[test]'
# js-libp2p for tests/interop (docs/interop.md); skipped, as those tests are, without Node.
# `npm ci` reinstalls from scratch, so it only runs when the lock file changed.
if command -v npm >/dev/null; then
  js=tests/interop/js
  if ! cmp -s "$js/package-lock.json" "$js/node_modules/.installed-lock.json"; then
    npm ci --prefix "$js" --no-audit --no-fund --loglevel=error >/dev/null
    cp "$js/package-lock.json" "$js/node_modules/.installed-lock.json"
  fi
fi
