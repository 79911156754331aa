#!/usr/bin/env bash
# Everything Mayfly needs on a fresh Debian machine that has Node 20 and npm: the npm packages,
# a running Docker Engine and the locally built Debian base image. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" != "20" ]; then
  echo "[mayfly] Node 20 is required (found $(node -v))" >&2
  exit 1
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "[mayfly] installing npm packages…" >&2
  npm ci --no-audit --no-fund --loglevel=error   # builds packages/cli/dist too (`prepare`)
fi
# The bundled CLI and server, again when a source under packages/*/src is newer than it.
node scripts/build.mjs --if-stale

bash scripts/ensure-docker.sh
bash scripts/ensure-base-image.sh
bash scripts/ensure-agent.sh
