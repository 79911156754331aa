#!/usr/bin/env bash
# Makes sure a Docker Engine answers on /var/run/docker.sock: installs Debian's docker.io when
# missing and starts dockerd in the background, clearing a stale pid file a killed daemon left.
set -euo pipefail

if docker info >/dev/null 2>&1; then exit 0; fi

if ! command -v dockerd >/dev/null 2>&1; then
  echo "[mayfly] installing Docker Engine (docker.io)…" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi

if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
  rm -f /var/run/docker.pid
fi
# containerd's own pid file can be stale too after a kill
if [ -f /run/docker/containerd/containerd.pid ] && ! kill -0 "$(cat /run/docker/containerd/containerd.pid)" 2>/dev/null; then
  rm -f /run/docker/containerd/containerd.pid
fi

echo "[mayfly] starting dockerd…" >&2
mkdir -p /var/log
nohup dockerd >/var/log/mayfly-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then exit 0; fi
  sleep 1
done
echo "[mayfly] dockerd did not come up; see /var/log/mayfly-dockerd.log" >&2
tail -20 /var/log/mayfly-dockerd.log >&2 || true
exit 1
