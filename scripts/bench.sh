#!/usr/bin/env bash
# Benchmarks Mayfly against docker-compose on examples/shop; prints a table, writes bench/results/*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
# BENCH_ONLY=cli: only the CLI start times, which need neither docker-compose nor the test image
# (nor do the sandboxes: BENCH_ONLY=sandboxes).
bash scripts/setup.sh
if [ "${BENCH_ONLY:-}" != cli ] && [ "${BENCH_ONLY:-}" != sandboxes ]; then
  if ! command -v docker-compose >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
  fi
  docker build -q -t mayfly-test/testkit:latest packages/server/src/test-support/images/testkit >/dev/null
fi
exec npx tsx bench/run.ts "$@"
