#!/usr/bin/env bash
# Starts a real single-node Kubernetes for Mayfly's tests and prints its kubeconfig's path as the
# last line on stdout (progress goes to stderr). `npm run cluster:up`; stop it with
# `npm run cluster:down`. Safe to run again: a cluster that is up is left as it is.
#
# Built from Debian's packages only: the Kubernetes 1.20 binaries from Debian's source package
# (build-kubernetes.sh, cached), etcd-server, a containerd instance of its own (own config, root,
# state and socket — Docker's containerd is not touched) with runc and the CNI plugins (bridge,
# host-local, portmap, firewall), a pause image made here, and Debian's docker-registry on
# 127.0.0.1:5000, which the cluster pulls from. Paths and addresses: scripts/cluster/lib.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=lib.sh
. "$here/lib.sh"

if [ "$(id -u)" -ne 0 ]; then
  log "the test cluster needs root (it runs a kubelet, containerd and iptables)"
  exit 1
fi

k8s_bin="$(bash "$here/build-kubernetes.sh" | tail -1)"
kubectl=("$k8s_bin/kubectl" --kubeconfig "$kubeconfig")

cluster_ready() {
  [ -f "$kubeconfig" ] && live_pid kubelet >/dev/null && live_pid kube-apiserver >/dev/null &&
    "${kubectl[@]}" get --raw /readyz >/dev/null 2>&1 &&
    [ "$("${kubectl[@]}" get node "$node_name" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ] &&
    curl -fsS "http://$registry/v2/" >/dev/null 2>&1
}
if cluster_ready; then
  log "already up"
  echo "$kubeconfig"
  exit 0
fi
if [ -d "$run" ]; then
  log "a cluster that is not whole is in $run: taking it down first"
  bash "$here/down.sh"
fi

packages=()
command -v etcd >/dev/null || packages+=(etcd-server)
[ -x /usr/lib/cni/bridge ] || packages+=(containernetworking-plugins)
command -v docker-registry >/dev/null || packages+=(docker-registry)
command -v conntrack >/dev/null || packages+=(conntrack)
command -v containerd >/dev/null || packages+=(containerd)
command -v runc >/dev/null || packages+=(runc)
command -v openssl >/dev/null || packages+=(openssl)
if [ "${#packages[@]}" -gt 0 ]; then
  log "installing ${packages[*]}"
  apt-get update -qq
  # Debian's packages would start their own etcd and registry through init scripts: not wanted.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
  [ "$own_policy" = 0 ] || rm -f "$policy"
fi
bash "$(dirname "$here")/ensure-docker.sh" # builds the pause image and pushes to the registry

mkdir -p "$run"/{pki,logs,pids,etcd,registry,containerd,cni/net.d,cni/ipam,kubelet,restore}

# What down.sh puts back.
for key in "${touched_sysctls[@]}"; do
  value="$(sysctl -n "$key" 2>/dev/null)" && printf '%s\t%s\n' "$key" "$value"
done >"$run/restore/sysctls"
for dir in /var/log/pods /var/log/containers; do
  [ -e "$dir" ] || echo "$dir"
done >"$run/restore/created-dirs"

start() { # name command...: runs a component in the background, its log in $run/logs
  local name="$1"
  shift
  nohup "$@" >"$run/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$run/pids/$name.pid"
}
wait_for() { # what seconds command...
  local what="$1" seconds="$2"
  shift 2
  for _ in $(seq 1 "$seconds"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  log "$what did not come up in ${seconds}s; the last lines of its log:"
  tail -25 "$run/logs/$what.log" >&2 || true
  exit 1
}

# --- certificates: one CA, a serving certificate for the API server, a client certificate per
# component (each authorised as itself), and the service-account signing key.
pki="$run/pki"
log "making certificates"
openssl_quiet() { openssl "$@" 2>/dev/null; }
openssl_quiet ecparam -name prime256v1 -genkey -noout -out "$pki/ca.key"
openssl_quiet req -x509 -new -key "$pki/ca.key" -subj "/CN=mayfly-test-cluster-ca" -days 3650 \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out "$pki/ca.crt"
issue() { # name subject usage [subjectAltName]
  local name="$1" subject="$2" usage="$3" sans="${4:-}"
  openssl_quiet ecparam -name prime256v1 -genkey -noout -out "$pki/$name.key"
  openssl_quiet req -new -key "$pki/$name.key" -subj "$subject" -out "$pki/$name.csr"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [ -z "$sans" ] || echo "subjectAltName=$sans"
  } >"$pki/$name.ext"
  openssl_quiet x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 3650 -extfile "$pki/$name.ext" -out "$pki/$name.crt"
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}
issue apiserver "/CN=kube-apiserver" serverAuth \
  "IP:$node_ip,IP:127.0.0.1,IP:$apiserver_service_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
issue kubelet-serving "/CN=$node_name" serverAuth "IP:$node_ip,DNS:$node_name"
issue apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
issue admin "/O=system:masters/CN=mayfly-admin" clientAuth
issue controller-manager "/CN=system:kube-controller-manager" clientAuth
issue scheduler "/CN=system:kube-scheduler" clientAuth
issue kubelet "/O=system:nodes/CN=system:node:$node_name" clientAuth
issue kube-proxy "/CN=system:kube-proxy" clientAuth
openssl_quiet ecparam -name prime256v1 -genkey -noout -out "$pki/sa.key"
openssl_quiet ec -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
chmod 600 "$pki"/*.key

write_kubeconfig() { # file client
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: mayfly-test
  cluster:
    server: https://$node_ip:$apiserver_port
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$pki/$2.crt")
    client-key-data: $(base64 -w0 "$pki/$2.key")
contexts:
- name: mayfly-test
  context: {cluster: mayfly-test, user: $2}
current-context: mayfly-test
EOF
  chmod 600 "$1"
}
for client in controller-manager scheduler kubelet kube-proxy; do
  write_kubeconfig "$run/$client.kubeconfig" "$client"
done

# --- the node's address on lo, sysctls the pods' networking needs
ip addr show dev lo | grep -q " $node_ip/32" || ip addr add "$node_ip/32" dev lo
sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1

# --- etcd and the local registry
log "starting etcd and the registry on $registry"
start etcd etcd --name mayfly-test --data-dir "$run/etcd" \
  --listen-client-urls "http://$etcd_client" --advertise-client-urls "http://$etcd_client" \
  --listen-peer-urls "http://$etcd_peer" --initial-advertise-peer-urls "http://$etcd_peer" \
  --initial-cluster "mayfly-test=http://$etcd_peer" --listen-metrics-urls "" \
  --quota-backend-bytes 2147483648 --log-level warn
cat >"$run/registry/config.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $run/registry/data}
  delete: {enabled: true}
http: {addr: $registry}
EOF
start registry docker-registry serve "$run/registry/config.yml"
wait_for etcd 30 curl -fsS "http://$etcd_client/health"
wait_for registry 30 curl -fsS "http://$registry/v2/"

# --- the pause image every pod's sandbox runs: a static binary that waits for a signal
if ! curl -fsS "http://$registry/v2/mayfly/pause/manifests/3.2" -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' >/dev/null 2>&1; then
  log "making the pause image"
  work="$(mktemp -d)"
  cat >"$work/pause.c" <<'EOF'
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void leave(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
  struct sigaction stop = {.sa_handler = leave}, child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
  sigaction(SIGINT, &stop, NULL);
  sigaction(SIGTERM, &stop, NULL);
  sigaction(SIGCHLD, &child, NULL);
  for (;;) pause();
}
EOF
  gcc -Os -static -o "$work/pause" "$work/pause.c"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$work/Dockerfile"
  docker build -q -t "$pause_image" "$work" >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; exit 1; }
  docker push -q "$pause_image" >/dev/null
  rm -rf "$work"
fi

# --- containerd of its own, talking CRI to the kubelet
cat >"$run/containerd/config.toml" <<EOF
version = 2
root = "$run/containerd/root"
state = "$run/containerd/state"
oom_score = 0
[grpc]
  address = "$containerd_sock"
[ttrpc]
  address = "$containerd_sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$run/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  # No CAP_SYS_RESOURCE here: containers may only raise their oom_score_adj.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$run/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$run/containerd/certs.d"
EOF
mkdir -p "$run/containerd/certs.d/$registry"
cat >"$run/containerd/certs.d/$registry/hosts.toml" <<EOF
server = "http://$registry"
[host."http://$registry"]
  capabilities = ["pull", "resolve"]
EOF
cat >"$run/cni/net.d/10-mayfly.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "mayfly-test-pods",
  "plugins": [
    {
      "type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$run/cni/ipam",
        "ranges": [[{ "subnet": "$pod_cidr" }]], "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } },
    { "type": "firewall" }
  ]
}
EOF
log "starting containerd, the control plane and the node"
start containerd containerd --config "$run/containerd/config.toml"
wait_for containerd 30 ctr --address "$containerd_sock" version

# --- the control plane
start kube-apiserver "$k8s_bin/kube-apiserver" \
  --etcd-servers "http://$etcd_client" \
  --bind-address "$node_ip" --secure-port "$apiserver_port" --advertise-address "$node_ip" \
  --insecure-port 0 \
  --service-cluster-ip-range "$service_cidr" \
  --allow-privileged=true \
  --authorization-mode Node,RBAC \
  --enable-admission-plugins NodeRestriction \
  --client-ca-file "$pki/ca.crt" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$pki/ca.crt" \
  --kubelet-preferred-address-types InternalIP \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$pki/sa.pub" \
  --service-account-signing-key-file "$pki/sa.key" \
  --profiling=false
write_kubeconfig "$kubeconfig" admin
wait_for kube-apiserver 90 "${kubectl[@]}" get --raw /readyz

start kube-controller-manager "$k8s_bin/kube-controller-manager" \
  --kubeconfig "$run/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$run/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$run/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --port 0 --secure-port 10257 \
  --leader-elect=false --use-service-account-credentials=true \
  --pvclaimbinder-sync-period 2s \
  --root-ca-file "$pki/ca.crt" --service-account-private-key-file "$pki/sa.key" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --profiling=false
start kube-scheduler "$k8s_bin/kube-scheduler" \
  --kubeconfig "$run/scheduler.kubeconfig" \
  --authentication-kubeconfig "$run/scheduler.kubeconfig" \
  --authorization-kubeconfig "$run/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --port 0 --secure-port 10259 \
  --leader-elect=false --profiling=false

# --- the node
cat >"$run/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
cgroupDriver: cgroupfs
failSwapOn: false
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
serializeImagePulls: false
evictionHard: {memory.available: 200Mi, nodefs.available: 2%, imagefs.available: 2%, nodefs.inodesFree: 2%}
# The log API reads a container's current log file only: keep it large enough for the tests'
# 128 MiB logs (the default rotates at 10 MiB).
containerLogMaxSize: 256Mi
containerLogMaxFiles: 2
imageGCHighThresholdPercent: 95
imageGCLowThresholdPercent: 90
# A memory-backed emptyDir (a sandbox's home and /tmp) is a tmpfs of its sizeLimit, as on every
# cluster from 1.22 (an alpha gate on 1.20); and no pod has more than 1024 processes (Kubernetes
# has no per-pod limit in the pod's spec: operators set this for the node).
featureGates: {SizeMemoryBackedVolumes: true}
podPidsLimit: 1024
EOF
start kubelet "$k8s_bin/kubelet" \
  --config "$run/kubelet/config.yaml" \
  --kubeconfig "$run/kubelet.kubeconfig" \
  --container-runtime remote --container-runtime-endpoint "unix://$containerd_sock" \
  --runtime-request-timeout 5m \
  --node-ip "$node_ip" --hostname-override "$node_name" \
  --root-dir "$run/kubelet" --cert-dir "$run/kubelet/pki" \
  --volume-plugin-dir "$run/kubelet/volume-plugins"
start kube-proxy "$k8s_bin/kube-proxy" \
  --kubeconfig "$run/kube-proxy.kubeconfig" \
  --hostname-override "$node_name" --bind-address "$node_ip" \
  --proxy-mode iptables --cluster-cidr "$pod_cidr" \
  --conntrack-max-per-core 0 --conntrack-tcp-timeout-established 0 --conntrack-tcp-timeout-close-wait 0 \
  --healthz-bind-address 127.0.0.1:10256 --metrics-bind-address 127.0.0.1:10249

node_ready() {
  [ "$("${kubectl[@]}" get node "$node_name" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
wait_for kubelet 120 node_ready
# Pods are admitted only once their namespace's default service account exists.
wait_for kube-controller-manager 60 "${kubectl[@]}" -n default get serviceaccount default
log "up: kubectl --kubeconfig $kubeconfig get nodes"
echo "$kubeconfig"
