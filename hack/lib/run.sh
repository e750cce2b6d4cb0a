# shellcheck shell=bash
# Configures and starts the cluster's host processes, then its add-ons.

# Sysctls that the kubelet, kube-proxy and pod networking change; `down` puts them back.
SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory net.ipv4.ip_forward
  net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables net.ipv4.conf.all.route_localnet)

# Records what `down` must put back, before anything here changes it (dockerd included).
save_host_state() {
  mkdir -p "$STATE_DIR"
  if [ ! -f "$STATE_DIR/sysctl.saved" ]; then
    local key
    for key in "${SYSCTLS[@]}"; do echo "$key=$(sysctl -n "$key")"; done > "$STATE_DIR/sysctl.saved"
  fi
}

# The ports each component listens on. One taken by a process that is not ours would make that
# component exit at start with a log line few people find: say it before anything starts.
COMPONENT_PORTS=(etcd:2379 etcd:2380 etcd:2381 kube-apiserver:$APISERVER_PORT kube-controller-manager:10257
  kube-scheduler:10259 kubelet:10250 kubelet:10248 kube-proxy:10249 kube-proxy:10256)

check_ports() {
  local item name port holder
  for item in "${COMPONENT_PORTS[@]}"; do
    name=${item%%:*} port=${item#*:}
    is_running "$name" && continue
    holder=$(ss -Hltnp "( sport = :$port )" 2>/dev/null | grep -o 'users:(([^)]*' | head -1 | sed 's/users:((//' || true)
    [ -z "$holder" ] || die "port $port, which $name needs, is taken by $holder: stop that process (if it is left from an earlier hack/cluster, run 'hack/cluster down' first)"
  done
}

prepare_host() {
  modprobe br_netfilter 2>/dev/null || true
  modprobe overlay 2>/dev/null || true
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1
}

# Rewrites a config file from stdin only when its content changes: kube-proxy exits when its
# configuration file is touched, and a re-run of `up` must not disturb a running cluster.
write_if_changed() {
  local tmp
  tmp=$(mktemp "$1.XXXX")
  cat > "$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv -f "$tmp" "$1"; fi
}

write_configs() {
  local ip
  ip=$(node_ip)
  mkdir -p "$STATE_DIR/cni/net.d" "$STATE_DIR/etcd" "$STATE_DIR/kubelet" "$STATE_DIR/volumes" "$RUN_DIR"
  write_if_changed "$STATE_DIR/containerd.toml" <<EOT
version = 2
root = "$STATE_DIR/containerd"
state = "$RUN_DIR/containerd"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This machine cannot lower oom_score_adj (no CAP_SYS_RESOURCE); without this every sandbox fails.
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$RUN_DIR/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$STATE_DIR/cni/net.d"
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE_DIR/containerd-opt"
EOT
  # firewall: dockerd sets the FORWARD policy to DROP; this plugin lets pod traffic through.
  write_if_changed "$STATE_DIR/cni/net.d/10-mlship.conflist" <<EOT
{
  "cniVersion": "1.0.0",
  "name": "mlship",
  "plugins": [
    {"type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$STATE_DIR/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "firewall"}
  ]
}
EOT
  write_if_changed "$STATE_DIR/kubelet.yaml" <<EOT
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI_DIR/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI_DIR/kubelet-serving.crt
tlsPrivateKeyFile: $PKI_DIR/kubelet-serving.key
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: [$DNS_SVC_IP]
resolvConf: /etc/resolv.conf
podCIDR: $POD_CIDR
# Images are built locally and cannot be pulled again: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 200Mi, nodefs.available: 2%, imagefs.available: 2%}
serializeImagePulls: false
EOT
  write_if_changed "$STATE_DIR/kube-proxy.yaml" <<EOT
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $CLUSTER_CIDR
hostnameOverride: $NODE_NAME
clientConnection: {kubeconfig: $STATE_DIR/kube-proxy.kubeconfig}
# Leave the host's conntrack table sizes alone.
conntrack: {maxPerCore: 0}
EOT
}

apiserver_ready() { kubectl_admin get --raw /readyz >/dev/null; }

start_control_plane() {
  local ip
  ip=$(node_ip)
  step "starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler"
  start_daemon etcd "$BIN_DIR/etcd" --name "$NODE_NAME" --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster "$NODE_NAME=http://127.0.0.1:2380" --listen-metrics-urls http://127.0.0.1:2381
  wait_for etcd 60 curl -sf http://127.0.0.1:2381/health
  start_daemon kube-apiserver "$BIN_DIR/kube-apiserver" \
    --etcd-servers http://127.0.0.1:2379 --advertise-address "$ip" --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$PKI_DIR/apiserver.crt" --tls-private-key-file "$PKI_DIR/apiserver.key" \
    --client-ca-file "$PKI_DIR/ca.crt" --kubelet-certificate-authority "$PKI_DIR/ca.crt" \
    --kubelet-client-certificate "$PKI_DIR/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI_DIR/apiserver-kubelet-client.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI_DIR/sa.pub" --service-account-signing-key-file "$PKI_DIR/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction,PodSecurity --allow-privileged=true \
    --requestheader-client-ca-file "$PKI_DIR/front-proxy-ca.crt" \
    --requestheader-allowed-names front-proxy-client --requestheader-username-headers X-Remote-User \
    --requestheader-group-headers X-Remote-Group --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$PKI_DIR/front-proxy-client.crt" \
    --proxy-client-key-file "$PKI_DIR/front-proxy-client.key" --enable-aggregator-routing=true \
    --profiling=false
  wait_for kube-apiserver 120 apiserver_ready
  start_daemon kube-controller-manager "$BIN_DIR/kube-controller-manager" \
    --kubeconfig "$STATE_DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE_DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$STATE_DIR/controller-manager.kubeconfig" \
    --use-service-account-credentials --service-account-private-key-file "$PKI_DIR/sa.key" \
    --root-ca-file "$PKI_DIR/ca.crt" --cluster-signing-cert-file "$PKI_DIR/ca.crt" \
    --cluster-signing-key-file "$PKI_DIR/ca.key" --service-cluster-ip-range "$SERVICE_CIDR" \
    --cluster-cidr "$CLUSTER_CIDR" --leader-elect=false --bind-address 127.0.0.1 --profiling=false
  start_daemon kube-scheduler "$BIN_DIR/kube-scheduler" \
    --kubeconfig "$STATE_DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$STATE_DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig "$STATE_DIR/scheduler.kubeconfig" \
    --leader-elect=false --bind-address 127.0.0.1 --profiling=false
}

start_node() {
  step "starting containerd, kubelet, kube-proxy"
  start_daemon containerd containerd --config "$STATE_DIR/containerd.toml"
  wait_for containerd 60 ctr -a "$CONTAINERD_SOCK" version
  local img
  # The upstream stand-ins go in too: the chart runs postgres and kafka, step pods use python as
  # their XCom sidecar, and smoke tests run it (a kind or minikube node would pull them).
  for img in "$PAUSE_IMAGE" "$COREDNS_IMAGE" "$METRICS_SERVER_IMAGE" python:3.11-slim-bookworm postgres:15-bookworm \
    "apache/kafka:$KAFKA_VERSION"; do
    ctr -a "$CONTAINERD_SOCK" -n k8s.io images check "name==$img" 2>/dev/null | grep -q complete \
      || load_images "$img"
  done
  start_daemon kubelet "$BIN_DIR/kubelet" --config "$STATE_DIR/kubelet.yaml" \
    --kubeconfig "$STATE_DIR/kubelet.kubeconfig" --root-dir "$STATE_DIR/kubelet" \
    --hostname-override "$NODE_NAME" --node-ip "$(node_ip)"
  start_daemon kube-proxy "$BIN_DIR/kube-proxy" --config "$STATE_DIR/kube-proxy.yaml"
  start_daemon mlship-provisioner "$BIN_DIR/mlship-provisioner" \
    --kubeconfig "$STATE_DIR/provisioner.kubeconfig" --root "$STATE_DIR/volumes" --node "$NODE_NAME"
  wait_for "node $NODE_NAME Ready" 180 node_ready
}

node_ready() {
  kubectl_admin get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True
}

apply_addons() {
  step "installing add-ons: RBAC for host components, CoreDNS, metrics-server, default StorageClass"
  local f
  for f in "$HACK_DIR"/addons/*.yaml; do
    sed -e "s|@DNS_SVC_IP@|$DNS_SVC_IP|g" -e "s|@COREDNS_IMAGE@|$COREDNS_IMAGE|g" \
      -e "s|@METRICS_SERVER_IMAGE@|$METRICS_SERVER_IMAGE|g" "$f"
    echo "---"
  done | kubectl_admin apply -f - >/dev/null
  wait_for "CoreDNS" 180 kubectl_admin -n kube-system rollout status deployment/coredns --timeout=5s
}
