#!/usr/bin/env bash
# Makes gVisor available to sandboxes of `gvisor` templates: installs Debian's runsc and registers
# it with the Docker Engine as the runtime "runsc", with the arguments sandboxes need
# (--host-uds=open: the sandbox agent connects to the control plane's socket; --network=none:
# gVisor's own network stack does not work with Docker's bridges here, and a sandbox has none).
# Keeps what daemon.json already says. Safe to run again. docs/sandboxes.md#gvisor explains.
set -euo pipefail

if ! command -v runsc >/dev/null 2>&1; then
  echo "[mayfly] installing gVisor (runsc)…" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runsc >/dev/null
fi

mkdir -p /etc/docker
node -e '
  const fs = require("node:fs");
  const file = "/etc/docker/daemon.json";
  let config = {};
  try { config = JSON.parse(fs.readFileSync(file, "utf8")); } catch (err) { if (err.code !== "ENOENT") throw err; }
  const wanted = { path: process.argv[1], runtimeArgs: ["--host-uds=open", "--network=none"] };
  config.runtimes = config.runtimes ?? {};
  if (JSON.stringify(config.runtimes.runsc) === JSON.stringify(wanted)) process.exit(0);
  config.runtimes.runsc = wanted;
  fs.writeFileSync(file + ".tmp", JSON.stringify(config, null, 2) + "\n");
  fs.renameSync(file + ".tmp", file);
' "$(command -v runsc)"

registered() {
  docker info --format '{{json .Runtimes}}' 2>/dev/null |
    grep -q '"runsc":{"path":"[^"]*","runtimeArgs":\["--host-uds=open","--network=none"\]'
}
if registered; then exit 0; fi
# dockerd reloads its runtimes on SIGHUP (adding one needs no restart).
if [ -f /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
  kill -HUP "$(cat /var/run/docker.pid)"
  for _ in $(seq 1 20); do
    if registered; then exit 0; fi
    sleep 0.5
  done
fi
echo "[mayfly] the Docker Engine did not pick up the runsc runtime; restart dockerd to load /etc/docker/daemon.json" >&2
exit 1
