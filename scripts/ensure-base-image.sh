#!/usr/bin/env bash
# Builds the Debian base image every Mayfly example and test image starts FROM. No registry is
# reachable, so it is made with debootstrap and `docker import`, once, and reused afterwards.
set -euo pipefail
IMAGE="${MAYFLY_BASE_IMAGE:-mayfly/debian:bookworm}"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then exit 0; fi

if ! command -v debootstrap >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

echo "[mayfly] building base image $IMAGE with debootstrap (first run only)…" >&2
ROOT="$(mktemp -d /tmp/mayfly-rootfs.XXXXXX)"
trap 'rm -rf "$ROOT"' EXIT
debootstrap --variant=minbase bookworm "$ROOT" http://deb.debian.org/debian >/tmp/mayfly-debootstrap.log 2>&1 \
  || { tail -20 /tmp/mayfly-debootstrap.log >&2; exit 1; }
# keep images small: no apt lists or caches in the base layer
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/archives/*.deb
tar -C "$ROOT" -c . | docker import - "$IMAGE" >/dev/null
echo "[mayfly] base image $IMAGE ready" >&2
