#!/usr/bin/env bash
# The whole suite: typecheck + lint + every test against the real Docker Engine, SQLite and
# PostgreSQL. Installs and starts what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/ensure-gvisor.sh   # sandboxes of gvisor templates are tested too
bash scripts/ensure-chromium.sh # the dashboard is tested in a real browser
MAYFLY_TEST_PG_URL="$(bash scripts/ensure-postgres.sh | tail -1)"
export MAYFLY_TEST_PG_URL

echo "[mayfly] typecheck" >&2
npx tsc -p . && npx tsc -p packages/dashboard
echo "[mayfly] lint" >&2
npx biome check .
echo "[mayfly] tests" >&2
mkdir -p .mayfly
summary() {
  node -e '
    const r = require(process.argv[1]);
    console.log(`${process.argv[2]}: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped`);
  ' "$1" "$2" || true
}
status=0
# Everything but the files that need a cluster (*.k8s.test.ts), which run on one below.
npx vitest run --exclude '**/*.k8s.test.ts' --reporter=default --reporter=json \
  --outputFile.json=.mayfly/test-results.json "$@" || status=$?
summary ./.mayfly/test-results.json tests

# The Kubernetes suite on a real single-node cluster (scripts/cluster: built from Debian's source
# package once, ~12 minutes; later runs start it in ~20 s), taken down again afterwards so the
# machine is as it was. MAYFLY_TEST_KUBECONFIG=<file> runs it on another cluster instead.
if [ "$#" -eq 0 ] && [ "${MAYFLY_SKIP_KUBERNETES:-}" != 1 ]; then
  echo "[mayfly] Kubernetes tests" >&2
  started_cluster=0
  if [ -z "${MAYFLY_TEST_KUBECONFIG:-}" ]; then
    MAYFLY_TEST_KUBECONFIG="$(bash scripts/cluster/up.sh | tail -1)"
    started_cluster=1
  fi
  export MAYFLY_TEST_KUBECONFIG
  k8s_status=0
  npx vitest run '.k8s.test.ts' --reporter=default --reporter=json \
    --outputFile.json=.mayfly/test-results-k8s.json || k8s_status=$?
  summary ./.mayfly/test-results-k8s.json 'Kubernetes tests'
  [ "$started_cluster" = 0 ] || bash scripts/cluster/down.sh
  [ "$k8s_status" = 0 ] || status=$k8s_status
fi
exit "$status"
