#!/usr/bin/env bash
# Benchmarks Mayfly against docker-compose on examples/shop (and on a Kubernetes cluster against
# Docker and the raw API); prints tables, writes bench/results/*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
# BENCH_ONLY=cli: only the CLI start times, which need neither docker-compose nor the test image
# (nor do the sandboxes: BENCH_ONLY=sandboxes). BENCH_ONLY=dashboard needs the test image and
# Chromium, not docker-compose.
bash scripts/setup.sh
if [ -z "${BENCH_ONLY:-}" ] || [ "${BENCH_ONLY:-}" = dashboard ]; then
  bash scripts/ensure-chromium.sh
fi
if [ "${BENCH_ONLY:-}" != cli ] && [ "${BENCH_ONLY:-}" != sandboxes ]; then
  if [ "${BENCH_ONLY:-}" != dashboard ] && ! command -v docker-compose >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
  fi
  docker build -q -t mayfly-test/testkit:latest packages/server/src/test-support/images/testkit >/dev/null
fi
# Seeded data: reflink copies are measured on an XFS made for the purpose (mkfs.xfs).
if { [ -z "${BENCH_ONLY:-}" ] || [ "${BENCH_ONLY:-}" = seeding ]; } && ! command -v mkfs.xfs >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xfsprogs >/dev/null
fi
# The cluster part (BENCH_ONLY=kubernetes or seeding, or the whole run) on the test cluster, started here and
# taken down afterwards unless MAYFLY_BENCH_KUBECONFIG names one; MAYFLY_SKIP_KUBERNETES=1 skips it.
started_cluster=0
if { [ -z "${BENCH_ONLY:-}" ] || [ "${BENCH_ONLY:-}" = kubernetes ] || [ "${BENCH_ONLY:-}" = seeding ]; } \
   && [ "${MAYFLY_SKIP_KUBERNETES:-}" != 1 ] && [ -z "${MAYFLY_BENCH_KUBECONFIG:-}" ]; then
  MAYFLY_BENCH_KUBECONFIG="$(bash scripts/cluster/up.sh | tail -1)"
  export MAYFLY_BENCH_KUBECONFIG
  started_cluster=1
fi
status=0
npx tsx bench/run.ts "$@" || status=$?
[ "$started_cluster" = 0 ] || bash scripts/cluster/down.sh
exit "$status"
