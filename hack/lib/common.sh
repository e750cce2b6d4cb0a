# shellcheck shell=bash
# shellcheck disable=SC2034  # settings are read by the files that source this one
# Settings, logging and process bookkeeping shared by hack/cluster's subcommands.

KUBE_VERSION=v1.34.4
ETCD_VERSION=v3.5.35
COREDNS_VERSION=v1.12.4
HELM_VERSION=v3.19.0
CRICTL_VERSION=v1.34.0
METRICS_SERVER_VERSION=v0.8.0
PAUSE_IMAGE=registry.k8s.io/pause:3.10
COREDNS_IMAGE=mlship.local/coredns:${COREDNS_VERSION}
METRICS_SERVER_IMAGE=mlship.local/metrics-server:${METRICS_SERVER_VERSION}

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The cache survives `down`: compiled binaries and base-image root filesystems.
CACHE_DIR=${MLSHIP_CACHE_DIR:-/var/cache/mlship}
# Everything of one running cluster; `down` removes it.
STATE_DIR=${MLSHIP_CLUSTER_DIR:-/var/lib/mlship-cluster}
RUN_DIR=/run/mlship-cluster
BIN_DIR=$CACHE_DIR/bin
PKI_DIR=$STATE_DIR/pki
LOG_DIR=$STATE_DIR/logs
PID_DIR=$RUN_DIR/pids
KUBECONFIG_ADMIN=$STATE_DIR/admin.kubeconfig
CONTAINERD_SOCK=$RUN_DIR/containerd.sock
CNI_BRIDGE=mlship0
CNI_BIN_DIR=/usr/lib/cni

NODE_NAME=${MLSHIP_NODE_NAME:-$(hostname | tr '[:upper:]' '[:lower:]')}
POD_CIDR=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SVC_IP=10.96.0.1
DNS_SVC_IP=10.96.0.10
APISERVER_PORT=6443

export PATH=$BIN_DIR:/usr/local/go/bin:$PATH

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
step() { printf '\n%s ==> %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '%s ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "hack/cluster must run as root (it starts a kubelet)"; }

node_ip() {
  local ip
  ip=${MLSHIP_NODE_IP:-$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1)}')}
  [ -n "$ip" ] || ip=$(hostname -I 2>/dev/null | awk '{print $1}')
  [ -n "$ip" ] || die "cannot find this machine's IPv4 address; set MLSHIP_NODE_IP"
  echo "$ip"
}

# Runs a long-lived daemon in the background, its output in $LOG_DIR/NAME.log and its PID in
# $PID_DIR/NAME.pid, so that `down` stops exactly what `up` started.
start_daemon() {
  local name=$1; shift
  if is_running "$name"; then log "$name already running (pid $(cat "$PID_DIR/$name.pid"))"; return; fi
  mkdir -p "$LOG_DIR" "$PID_DIR"
  setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 < /dev/null &
  echo $! > "$PID_DIR/$name.pid"
  log "started $name (pid $!, log $LOG_DIR/$name.log)"
}

is_running() {
  local pidfile=$PID_DIR/$1.pid pid
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null
}

# stop_daemons NAME...: SIGTERM to all at once, SIGKILL to those still there after 10 seconds.
stop_daemons() {
  local name pids=() pid i
  for name in "$@"; do
    [ -f "$PID_DIR/$name.pid" ] || continue
    pid=$(cat "$PID_DIR/$name.pid")
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null && pids+=("$pid") && log "stopping $name (pid $pid)"; fi
    rm -f "$PID_DIR/$name.pid"
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  for i in $(seq 1 100); do
    kill -0 "${pids[@]}" 2>/dev/null || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then log "pid $pid did not stop in 10s: killing it"; kill -KILL "$pid" 2>/dev/null || true; fi
  done
  # A killed process is gone only once reaped by its parent (init): wait until then.
  for i in $(seq 1 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
}

# wait_for DESCRIPTION TIMEOUT_SECONDS COMMAND...: polls COMMAND until it succeeds.
wait_for() {
  local what=$1 timeout=$2 start=$SECONDS; shift 2
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - start >= timeout )); then die "timed out after ${timeout}s waiting for $what"; fi
    sleep 1
  done
  log "$what: ready after $((SECONDS - start))s"
}

kubectl_admin() { "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
