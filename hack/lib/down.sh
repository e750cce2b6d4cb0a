# shellcheck shell=bash
# Takes the cluster apart: only what `up` started and changed. The cache stays.

crictl_local() { crictl --runtime-endpoint "unix://$CONTAINERD_SOCK" --timeout 30s "$@"; }

remove_pods() {
  is_running containerd || return 0
  log "stopping and removing pods (their network goes with them)"
  crictl_local rmp --all --force >/dev/null 2>&1 || log "  some pods could not be removed cleanly"
}

# containerd's shims outlive it by design; ours are the ones that name our socket.
kill_shims() {
  local pids
  pids=$(pgrep -f "containerd-shim.*-address $CONTAINERD_SOCK" || true)
  [ -n "$pids" ] || return 0
  log "stopping leftover containerd shims: $(echo $pids)"
  kill -TERM $pids 2>/dev/null || true
  sleep 2
  kill -KILL $pids 2>/dev/null || true
}

unmount_all() {
  local dir m
  for dir in "$STATE_DIR" "$RUN_DIR"; do
    # Deepest first; `findmnt` lists submounts of the directory tree.
    for m in $(awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/self/mounts | sort -r); do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "  could not unmount $m"
    done
  done
  # Pod network namespaces: only our containerd runs the CRI here, and it names them cni-*.
  for m in /run/netns/cni-*; do
    [ -e "$m" ] || continue
    umount "$m" 2>/dev/null || true
    rm -f "$m"
  done
}

# Drops every chain the kubelet, kube-proxy and the CNI plugins made (KUBE-*, CNI-*) and every
# rule that jumps to one, leaving everyone else's rules as they are.
clean_iptables() {
  local save rules
  for save in iptables-save ip6tables-save; do
    command -v "$save" >/dev/null || continue
    rules=$("$save")
    grep -qE 'KUBE-|CNI-' <<<"$rules" || continue
    grep -vE 'KUBE-|CNI-' <<<"$rules" | "${save/-save/-restore}" || log "  ${save/-save/-restore} failed: some rules may remain"
    log "removed the cluster's ${save%-save} rules"
  done
}

# Only when `up` started dockerd: stop it and put back the firewall and links as they were before.
stop_our_dockerd() {
  [ -f "$PID_DIR/dockerd.pid" ] || return 0
  stop_daemons dockerd
  ip link delete docker0 2>/dev/null && log "removed bridge docker0" || true
  umount /run/docker/netns/* 2>/dev/null || true
  local v
  for v in iptables ip6tables; do
    [ -f "$STATE_DIR/$v.before" ] && "$v-restore" < "$STATE_DIR/$v.before" && log "restored $v as it was before dockerd"
  done
}

remove_cgroups() {
  local root
  for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [ -d "$root" ] || continue
    find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

restore_sysctls() {
  [ -f "$STATE_DIR/sysctl.saved" ] || return 0
  local line
  while IFS= read -r line; do sysctl -qw "$line" 2>/dev/null || log "  could not restore $line"; done \
    < "$STATE_DIR/sysctl.saved"
  log "restored sysctls: $(cut -d= -f1 "$STATE_DIR/sysctl.saved" | tr '\n' ' ')"
}

cluster_down() {
  step "stopping the cluster"
  # The kubelet first, so that it does not restart the pods we remove.
  stop_daemons mlship-provisioner kubelet kube-proxy kube-scheduler kube-controller-manager
  remove_pods
  stop_daemons containerd
  kill_shims
  stop_daemons kube-apiserver etcd
  unmount_all
  if ip link show "$CNI_BRIDGE" >/dev/null 2>&1; then ip link delete "$CNI_BRIDGE"; log "removed bridge $CNI_BRIDGE"; fi
  stop_our_dockerd
  clean_iptables
  remove_cgroups
  restore_sysctls
  rm -rf "$STATE_DIR" "$RUN_DIR"
  log "cluster removed; the build cache stays in $CACHE_DIR"
}
