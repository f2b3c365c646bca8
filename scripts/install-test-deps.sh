#!/usr/bin/env bash
# Everything the test suite needs: the package with its test extras, the
# Prometheus server + promtool (Debian package) for the metrics tests, and (as root)
# what the namespaced lab tests use (scripts/lab-deps.sh).
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
