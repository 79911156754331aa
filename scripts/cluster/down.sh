#!/usr/bin/env bash
# Stops the test cluster that up.sh started and puts the machine back as it was: every pod's
# processes, containerd's tasks and mounts, the pods' bridge, the iptables rules and chains the
# kubelet, kube-proxy and the CNI plugins made (Docker's are left as they are), the sysctls they
# changed, the node address on lo, and the cluster's directory. Safe to run when nothing is up.
# `npm run cluster:down`. The built binaries (build-kubernetes.sh's cache) are kept.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=lib.sh
. "$here/lib.sh"

stop() { # name...: SIGTERM to each, then SIGKILL to those still running after 10 seconds
  local name pid pids=()
  for name in "$@"; do
    if pid="$(live_pid "$name")"; then
      kill "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for _ in $(seq 1 100); do
    local alive=()
    for pid in "${pids[@]}"; do if kill -0 "$pid" 2>/dev/null; then alive+=("$pid"); fi; done
    [ "${#alive[@]}" -gt 0 ] || return 0
    sleep 0.1
  done
  log "killing what did not stop in 10s: $*"
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
}

log "stopping the node and the control plane"
stop kubelet kube-proxy kube-scheduler kube-controller-manager kube-apiserver

# Every pod's containers, through containerd while it still runs, so their shims exit cleanly.
if live_pid containerd >/dev/null && command -v ctr >/dev/null; then
  ctr_=(ctr --address "$containerd_sock" --namespace k8s.io)
  tasks="$("${ctr_[@]}" tasks ls -q 2>/dev/null || true)"
  for task in $tasks; do "${ctr_[@]}" tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true; done
  # containerd's CRI deletes a task (and lets its shim go) once it has exited.
  for _ in $(seq 1 50); do
    [ -n "$("${ctr_[@]}" tasks ls -q 2>/dev/null || true)" ] || break
    sleep 0.1
  done
fi
stop containerd
# Whatever is left in the pods' cgroups (a shim that did not answer, say), then the cgroups.
for hierarchy in /sys/fs/cgroup/*/; do
  [ -d "$hierarchy/kubepods" ] || continue
  find "$hierarchy/kubepods" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null || true
done
pkill -9 -f -- "-address $containerd_sock" 2>/dev/null || true
sleep 0.2
for hierarchy in /sys/fs/cgroup/*/; do
  [ -d "$hierarchy/kubepods" ] || continue
  find "$hierarchy/kubepods" -depth -type d -exec rmdir {} + 2>/dev/null || true
done
stop etcd registry

# Mounts under the cluster's directory (containers' rootfs and shm, pods' volumes, network
# namespaces), deepest first.
if [ -d "$run" ]; then
  awk -v root="$run" 'index($5, root "/") == 1 || $5 == root { print $5 }' /proc/self/mountinfo |
    sort -r | while read -r target; do umount -l "$target" 2>/dev/null || true; done
fi

ip link show "$bridge" >/dev/null 2>&1 && ip link delete "$bridge"

# The rules and chains named KUBE-* (kubelet, kube-proxy) and CNI-* (bridge, portmap, firewall
# plugins): the rules that jump to them from other chains are deleted, then the chains.
clean_iptables() { # iptables-save iptables-restore
  local save="$1" restore="$2" table="" script="" line
  command -v "$save" >/dev/null || return 0
  local tables
  tables="$("$save" 2>/dev/null)" || return 0
  local jumps="" chains=""
  while IFS= read -r line; do
    case "$line" in
      \**) table="${line#\*}" ;;
      :KUBE-* | :CNI-*) chains+="$table ${line%% *}"$'\n' ;;
      -A\ KUBE-* | -A\ CNI-*) ;;
      -A\ *KUBE-* | -A\ *CNI-*) jumps+="$table -D ${line#-A }"$'\n' ;;
    esac
  done <<<"$tables"
  [ -n "$chains$jumps" ] || return 0
  for t in filter nat mangle raw; do
    local body=""
    while IFS= read -r line; do
      if [ "${line%% *}" = "$t" ]; then body+="${line#* }"$'\n'; fi
    done <<<"$jumps"
    while IFS= read -r line; do
      if [ "${line%% *}" = "$t" ]; then body+="-F ${line#* :}"$'\n'; fi
    done <<<"$chains"
    while IFS= read -r line; do
      if [ "${line%% *}" = "$t" ]; then body+="-X ${line#* :}"$'\n'; fi
    done <<<"$chains"
    if [ -n "$body" ]; then script+="*$t"$'\n'"$body"'COMMIT'$'\n'; fi
  done
  printf '%s' "$script" | "$restore" --noflush || log "could not remove every $save rule (see above)"
}
clean_iptables iptables-save iptables-restore
clean_iptables ip6tables-save ip6tables-restore

if [ -f "$run/restore/sysctls" ]; then
  while IFS=$'\t' read -r key value; do
    sysctl -qw "$key=$value" 2>/dev/null || true
  done <"$run/restore/sysctls"
fi
if [ -f "$run/restore/created-dirs" ]; then
  while read -r dir; do if [ -n "$dir" ]; then rm -rf "$dir"; fi; done <"$run/restore/created-dirs"
fi
ip addr show dev lo | grep -q " $node_ip/32" && ip addr del "$node_ip/32" dev lo
rm -rf "$run"
log "down"
