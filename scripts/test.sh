#!/usr/bin/env bash
# The whole suite: typecheck + lint + every test against the real Docker Engine, SQLite and
# PostgreSQL. Installs and starts what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/ensure-gvisor.sh   # sandboxes of gvisor templates are tested too
MAYFLY_TEST_PG_URL="$(bash scripts/ensure-postgres.sh | tail -1)"
export MAYFLY_TEST_PG_URL

echo "[mayfly] typecheck" >&2
npx tsc -p .
echo "[mayfly] lint" >&2
npx biome check .
echo "[mayfly] tests" >&2
mkdir -p .mayfly
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json=.mayfly/test-results.json "$@" || status=$?
node -e '
  const r = require("./.mayfly/test-results.json");
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped`);
' || true
exit "$status"
