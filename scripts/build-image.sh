#!/usr/bin/env bash
# Builds Mayfly's own image (deploy/image/Dockerfile) from this checkout: the bundled CLI and server
# (packages/cli/dist), their production dependencies as installed here (native ones included, built
# for this Node and Debian 12, the image's base), and this machine's Node 20 binary — nothing is
# downloaded but Debian packages. Also the PostgreSQL image deploy/kubernetes runs
# (deploy/image/postgres). Prints `postgres REF`, then `mayfly REF` last.
#
#   scripts/build-image.sh [--push REGISTRY]   also tags and pushes both to REGISTRY
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PUSH=""
if [ "${1:-}" = "--push" ]; then PUSH="${2:?--push needs a registry, such as 127.0.0.1:5000}"; fi

NODE="$(command -v node)"
case "$("$NODE" --version)" in
  v20.*) ;;
  *) echo "build-image: Node 20 is needed (found $("$NODE" --version))" >&2; exit 1 ;;
esac
bash scripts/ensure-base-image.sh
node scripts/build.mjs --if-stale

VERSION="$(node -p "require('./packages/cli/package.json').version")"
# The commit, marked when the checkout has changes of its own (its image is not that commit's).
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo local)"
[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || COMMIT="$COMMIT-dirty-$(date +%s)"
TAG="${MAYFLY_IMAGE_TAG:-$VERSION-$COMMIT}"
IMAGE="mayfly/mayfly:$TAG"

CONTEXT="$(mktemp -d /tmp/mayfly-image.XXXXXX)"
trap 'rm -rf "$CONTEXT"' EXIT
cp "$NODE" "$CONTEXT/node"
mkdir -p "$CONTEXT/app/packages/cli"
cp -r packages/cli/bin packages/cli/dist packages/cli/package.json "$CONTEXT/app/packages/cli/"
# The container agent (packages/agent/dist, found by the server there): sandboxes on the cluster,
# and the helper pods that copy volume snapshots.
bash scripts/ensure-agent.sh
mkdir -p "$CONTEXT/app/packages/agent/dist"
cp packages/agent/dist/mayfly-agent "$CONTEXT/app/packages/agent/dist/"
# The dashboard's build, which the server serves at / (packages/dashboard/dist).
mkdir -p "$CONTEXT/app/packages/dashboard"
cp -r packages/dashboard/dist "$CONTEXT/app/packages/dashboard/"
# The production dependencies, as npm resolved them here (the workspaces' own packages are in the
# bundle already).
if ! deps="$(npm ls --omit=dev --all --parseable 2>/tmp/mayfly-npm-ls.err)"; then
  echo "build-image: npm ls found a problem with the installed dependencies:" >&2
  cat /tmp/mayfly-npm-ls.err >&2
  exit 1
fi
printf '%s\n' "$deps" \
  | sed -n "s|^$ROOT/||p" \
  | grep '^node_modules/' \
  | grep -v '^node_modules/@mayfly/' \
  | sort -u \
  | while read -r dir; do
      mkdir -p "$CONTEXT/app/$(dirname "$dir")"
      [ -e "$CONTEXT/app/$dir" ] || cp -a "$dir" "$CONTEXT/app/$dir"
    done
docker build -q -t "$IMAGE" -f deploy/image/Dockerfile "$CONTEXT" >/dev/null
POSTGRES="mayfly/postgres:15"
docker build -q -t "$POSTGRES" deploy/image/postgres >/dev/null

publish() { # image → the reference to use
  if [ -z "$PUSH" ]; then echo "$1"; return; fi
  docker tag "$1" "$PUSH/$1"
  docker push -q "$PUSH/$1" >/dev/null
  echo "$PUSH/$1"
}
echo "postgres $(publish "$POSTGRES")"
echo "mayfly $(publish "$IMAGE")"
