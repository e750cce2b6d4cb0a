# shellcheck shell=bash
# Installs host packages and compiles the cluster's binaries into $BIN_DIR (cached).

APT_PACKAGES=(
  docker.io containerd runc containernetworking-plugins iptables conntrack ebtables ethtool
  socat iproute2 kmod util-linux mount openssl debootstrap gcc libc6-dev jq curl ca-certificates
  maven  # resolves the Kafka stand-in's jars from Maven Central
)

install_packages() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then log "host packages: all present"; return; fi
  step "installing host packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  command -v go >/dev/null || die "Go is needed to build Kubernetes: install Go >= 1.24 (e.g. 'apt-get install golang-1.24' or from go.dev)"
}

# go_build NAME STAMP DIR ARGS...: runs `go build ARGS` in DIR unless STAMP says it's done.
go_build() {
  local name=$1 stamp=$BIN_DIR/.$2 logf=$CACHE_DIR/build-$2.log dir=$3 start=$SECONDS; shift 3
  if [ -f "$stamp" ]; then log "$name: cached"; return; fi
  step "building $name (first time only; log in $logf)"
  mkdir -p "$BIN_DIR"
  # -v prints each package as it is compiled: the count is our progress meter.
  (cd "$dir" && env CGO_ENABLED=0 GOBIN="$BIN_DIR" go "$1" -v "${@:2}") >"$logf" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if (( (SECONDS - start) % 30 == 0 )) && kill -0 "$pid" 2>/dev/null; then
      log "  $name: $(grep -vc '^go: downloading' "$logf") packages compiled ($((SECONDS - start))s)"
    fi
  done
  wait "$pid" || { tail -20 "$logf" >&2; die "building $name failed (log: $logf)"; }
  touch "$stamp"
  log "$name: built in $((SECONDS - start))s"
}

kube_ldflags() {
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local flags="-s -w" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

build_binaries() {
  mkdir -p "$CACHE_DIR"
  [ -f "$BIN_DIR/.kubernetes-$KUBE_VERSION" ] ||
    log "first build: about 18 minutes on 2 cores (Kubernetes ~9, CoreDNS ~2, metrics-server ~3, helm ~1.5), then cached"
  # One `go build` for all Kubernetes commands shares their compiled packages.
  go_build "kubernetes $KUBE_VERSION" "kubernetes-$KUBE_VERSION" "$HACK_DIR/build/kubernetes" \
    build -trimpath -ldflags "$(kube_ldflags)" -o "$BIN_DIR/" tool ./mlship-provisioner
  go_build "etcd $ETCD_VERSION" "etcd-$ETCD_VERSION" "$HACK_DIR/build/etcd" \
    build -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcd" go.etcd.io/etcd/server/v3
  go_build "crictl $CRICTL_VERSION" "crictl-$CRICTL_VERSION" "$HACK_DIR/build/crictl" \
    build -trimpath -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
    -o "$BIN_DIR/crictl" tool
  local tool
  for tool in "coredns github.com/coredns/coredns@$COREDNS_VERSION" "helm helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
    "metrics-server sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION"; do
    set -- $tool
    go_build "$1 ${2#*@}" "$1-${2#*@}" /tmp install -trimpath -ldflags "-s -w" "$2"
  done
}
