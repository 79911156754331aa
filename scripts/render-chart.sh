#!/usr/bin/env bash
# Renders a Helm chart as `helm template` would (scripts/render-chart/main.go says how, and why not
# Helm itself): builds the renderer once from Debian's Go and Sprig packages, then runs it.
#
#   scripts/render-chart.sh [-f values.yaml]... [--name RELEASE] [--namespace NS] CHART_DIR
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${MAYFLY_RENDER_CHART_CACHE:-/var/cache/mayfly-render-chart}"
GO=/usr/lib/go-1.23/bin/go
BIN="$CACHE/render-chart-$(sha256sum "$ROOT/scripts/render-chart/main.go" | cut -c1-12)"

if [ ! -x "$BIN" ]; then
  if [ ! -x "$GO" ] || [ ! -d /usr/share/gocode/src/github.com/Masterminds/sprig ] \
     || [ ! -d /usr/share/gocode/src/gopkg.in/yaml.v3 ]; then
    echo "[mayfly] installing Go and Sprig from Debian for render-chart" >&2
    if [ ! -x "$GO" ]; then
      if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "[mayfly] adding bookworm-backports (Go 1.23) to apt's sources" >&2
        echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/mayfly-backports.list
      fi
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports golang-1.23-go >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-github-masterminds-sprig-dev golang-gopkg-yaml.v3-dev >/dev/null
  fi
  mkdir -p "$CACHE"
  work="$(mktemp -d)"
  mkdir -p "$work/src/render-chart"
  cp "$ROOT/scripts/render-chart/main.go" "$work/src/render-chart/"
  status=0
  GOPATH="$work:/usr/share/gocode" GO111MODULE=off GOCACHE="$CACHE/gocache" GOTOOLCHAIN=local \
    "$GO" build -o "$BIN.tmp" render-chart || status=$?
  rm -rf "$work"
  [ "$status" = 0 ] || exit "$status"
  mv "$BIN.tmp" "$BIN"
fi
exec "$BIN" "$@"
