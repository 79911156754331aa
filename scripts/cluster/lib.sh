# Shared by up.sh and down.sh: where the test cluster lives and the addresses it uses.
# Sourced, not run.

# Everything a running cluster writes (certificates, etcd data, containerd's root and state, the
# kubelet's root, the registry's storage, logs, pids, what down.sh restores). Removed by down.sh.
run="${MAYFLY_CLUSTER_DIR:-/var/lib/mayfly-cluster}"
case "$run" in
  /*/*) ;;
  *) echo "[mayfly cluster] MAYFLY_CLUSTER_DIR must be an absolute path below a directory (down.sh removes it)" >&2; exit 1 ;;
esac
# Built binaries and the Go cache: kept across up/down (scripts/cluster/build-kubernetes.sh).
cache="${MAYFLY_K8S_CACHE:-/var/cache/mayfly-k8s}"

node_name=mayfly-node
# The node's own address, on `lo` (this machine has no dummy links). Pods, Services and the node
# use ranges that Docker's default address pools (172.17-31.x, 192.168.x) never hand out.
node_ip=10.245.0.1
pod_cidr=10.244.0.0/24
service_cidr=10.96.0.0/16
apiserver_service_ip=10.96.0.1
apiserver_port=6443
etcd_client=127.0.0.1:23790
etcd_peer=127.0.0.1:23800
registry=127.0.0.1:5000
bridge=mayfly-k8s0
containerd_sock="$run/containerd/containerd.sock"
pause_image="$registry/mayfly/pause:3.2"
kubeconfig="$run/admin.kubeconfig"

# The sysctls the kubelet, kube-proxy and the CNI plugins set; down.sh puts back what they were.
touched_sysctls=(
  vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes
  net.ipv4.ip_forward net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables
  net.bridge.bridge-nf-call-ip6tables
)

log() { echo "[mayfly cluster] $*" >&2; }

# The pid a component's pid file names, when that process is still alive.
live_pid() {
  local file="$run/pids/$1.pid" pid
  [ -f "$file" ] || return 1
  pid="$(cat "$file")"
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}
