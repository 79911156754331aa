#!/usr/bin/env bash
# Debian's Chromium, which the dashboard's browser tests drive with playwright-core (no browser is
# ever downloaded). Safe to run again.
set -euo pipefail

if ! command -v chromium >/dev/null 2>&1; then
  echo "[mayfly] installing Chromium for the browser tests…" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
