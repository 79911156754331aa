#!/usr/bin/env bash
# Builds packages/agent/dist/mayfly-agent, the static binary Mayfly mounts into containers, when it
# is missing or older than its sources. Installs Debian's Go toolchain when none is there (the Go
# standard library is all the agent uses: no module proxy is needed).
set -euo pipefail
cd "$(dirname "$0")/../packages/agent"

out=dist/mayfly-agent
stale=1
if [ -x "$out" ]; then
  stale=0
  for f in go.mod ./*.go; do
    if [ "$f" -nt "$out" ]; then stale=1; fi
  done
fi
[ "$stale" = 0 ] && exit 0

if ! command -v go >/dev/null 2>&1; then
  echo "[mayfly] installing the Go toolchain (golang-go)…" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null
fi

echo "[mayfly] building the container agent…" >&2
mkdir -p dist
# Static (no libc needed in the image), no module downloads, reproducible paths.
CGO_ENABLED=0 GOFLAGS=-mod=mod GOPROXY=off go build -trimpath -ldflags='-s -w' -o "$out.tmp" .
mv "$out.tmp" "$out"
