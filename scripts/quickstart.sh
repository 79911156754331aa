#!/usr/bin/env bash
# Quick start: installs what is missing, starts Docker and a local Mayfly server, and brings up the
# example shop (web + API + PostgreSQL + a migration job). Prints the URLs when it is ready.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

state="$(npx mayfly get shop --json 2>/dev/null | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{console.log(JSON.parse(s).state)}catch{console.log("none")}})' || true)"
case "$state" in
  ready|pending|building|creating)
    echo "[mayfly] the example is already up:" >&2
    exec npx mayfly get shop
    ;;
esac
exec npx mayfly up -f examples/shop/compose.yaml --name shop
