#!/usr/bin/env bash
# Builds the Kubernetes binaries a single-node test cluster needs from Debian's own `kubernetes`
# source package (1.20.2 with Debian's patches) — no registry, GitHub or Go proxy is reachable here.
# Go comes from bookworm-backports (golang-1.23-go); the build is GOPATH mode on the vendored
# dependencies. Source, GOCACHE and binaries live under $MAYFLY_K8S_CACHE (default
# /var/cache/mayfly-k8s), outside any clone, so a later run finds the binaries and returns at once.
# Prints the binaries' directory as its last line.
set -euo pipefail

cache="${MAYFLY_K8S_CACHE:-/var/cache/mayfly-k8s}"
bin="$cache/bin"
commands=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
log() { echo "[mayfly cluster] $*" >&2; }

# Binaries built before the reflect2 fix below crash on custom resources: made again.
fixes="reflect2-1.0.2"
have_all() {
  [ "$(cat "$bin/.fixes" 2>/dev/null)" = "$fixes" ] || return 1
  for c in "${commands[@]}"; do [ -x "$bin/$c" ] || return 1; done
}
if have_all; then
  echo "$bin"
  exit 0
fi
mkdir -p "$bin" "$cache/gocache" "$cache/src"

# Debian's archive, as the machine's own sources name it, for the source package and backports.
list=/etc/apt/sources.list.d/mayfly-kubernetes.list
if [ ! -f "$list" ]; then
  mirror="$(grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | awk '{print $2}' || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  log "adding $mirror bookworm (deb-src) and bookworm-backports to $list"
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg # (apt refuses one source with two keyrings)
  printf 'deb-src [signed-by=%s] %s bookworm main\ndeb [signed-by=%s] %s bookworm-backports main\n' \
    "$keyring" "$mirror" "$keyring" "$mirror" > "$list.tmp"
  mv "$list.tmp" "$list"
  apt-get update -qq
fi
go_root=/usr/lib/go-1.23
if [ ! -x "$go_root/bin/go" ]; then
  log "installing golang-1.23-go from bookworm-backports"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports golang-1.23-go >/dev/null
fi
# Debian's 1.20 vendors github.com/modern-go/reflect2 1.0.1, which calls the Go runtime's
# map iterator with its pre-1.18 signature: built with Go 1.23, the apiserver crashes on the first
# custom resource it encodes (a VolumeSnapshotClass). Debian's own reflect2 1.0.2 replaces it.
reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
if [ ! -f "$reflect2/go.mod" ]; then
  log "installing golang-github-modern-go-reflect2-dev (reflect2 1.0.2)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-github-modern-go-reflect2-dev >/dev/null
fi
for tool in dpkg-source rsync; do
  command -v "$tool" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dpkg-dev rsync >/dev/null
done

gopath="$cache/src/gopath"
tree="$gopath/src/k8s.io/kubernetes"
if [ ! -f "$tree/Makefile" ]; then
  log "fetching Debian's kubernetes source package"
  work="$cache/src/package"
  rm -rf "$work" && mkdir -p "$work"
  (cd "$work" && apt-get source -qq kubernetes >/dev/null)
  unpacked="$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -1)"
  mkdir -p "$(dirname "$tree")"
  rm -rf "$tree"
  mv "$unpacked" "$tree"
fi

vendored="$tree/vendor/github.com/modern-go/reflect2"
if [ ! -f "$vendored/go_above_118.go" ]; then
  rm -rf "$vendored.new" && cp -a "$reflect2" "$vendored.new"
  rm -rf "$vendored" && mv "$vendored.new" "$vendored"
fi
# Binaries without the stamp may have been built before the fix: every one is made again.
if [ "$(cat "$bin/.fixes" 2>/dev/null)" != "$fixes" ]; then
  for c in "${commands[@]}"; do rm -f "$bin/$c"; done
fi

export GOPATH="$gopath" GO111MODULE=off GOFLAGS=-mod=vendor GOCACHE="$cache/gocache" GOTOOLCHAIN=local
export PATH="$go_root/bin:$PATH"
cd "$tree"
if [ ! -f "$cache/src/.openapi-generated" ]; then
  log "generating the OpenAPI definitions"
  nice -n 10 make gen_openapi >&2
  touch "$cache/src/.openapi-generated"
fi
# The version the binaries report (kubectl and the kubelet compare it with the apiserver's): the
# upstream release Debian packaged, e.g. 1.20.5+really1.20.2-1.1+deb12u1 → v1.20.2.
packaged="$(dpkg-parsechangelog -S Version)"
release="${packaged##*really}"
release="v${release%%-*}"
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  at="k8s.io/kubernetes/vendor/$pkg"
  minor="${release#v*.}"
  ldflags+=" -X $at.gitVersion=$release -X $at.gitMajor=${release:1:1} -X $at.gitMinor=${minor%%.*}"
  ldflags+=" -X $at.gitTreeState=clean -X $at.buildDate=1970-01-01T00:00:00Z"
done
for c in "${commands[@]}"; do
  [ -x "$bin/$c" ] && continue
  log "building $c ($release)"
  nice -n 10 go build -ldflags "$ldflags" -o "$bin/$c.tmp" "./cmd/$c" >&2
  mv "$bin/$c.tmp" "$bin/$c"
done
echo "$fixes" > "$bin/.fixes"
echo "$bin"
