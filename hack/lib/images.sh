# shellcheck shell=bash
# Docker (to build images), the base images nobody can pull here, and moving images into the cluster.

# Local stand-ins for the upstream images our Dockerfiles start FROM, under the same names.
BASE_IMAGES=(debian:bookworm-slim python:3.11-slim-bookworm postgres:15-bookworm)
# apache/kafka at the release hack/images/kafka/pom.xml resolves (the chart's default tag).
KAFKA_VERSION=$(sed -n 's|.*<kafka.version>\(.*\)</kafka.version>.*|\1|p' "$HACK_DIR/images/kafka/pom.xml")
BASE_IMAGES+=("apache/kafka:$KAFKA_VERSION")

ensure_docker() {
  if docker info >/dev/null 2>&1; then return; fi
  step "starting dockerd (to build images)"
  mkdir -p "$PID_DIR" "$LOG_DIR"
  save_host_state
  # dockerd rewrites the firewall (FORWARD policy, DOCKER chains): keep the rules from before it.
  iptables-save > "$STATE_DIR/iptables.before"
  ip6tables-save > "$STATE_DIR/ip6tables.before"
  start_daemon dockerd dockerd --host unix:///var/run/docker.sock
  wait_for "dockerd" 60 docker info
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

build_base_images() {
  local rootfs=$CACHE_DIR/rootfs/debian-bookworm start=$SECONDS
  if ! have_image debian:bookworm-slim; then
    if [ ! -f "$rootfs.tar" ]; then
      step "debootstrap: a minimal Debian bookworm root filesystem (about a minute)"
      rm -rf "$rootfs" && mkdir -p "$rootfs"
      debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$CACHE_DIR/debootstrap.log" 2>&1 \
        || { tail -20 "$CACHE_DIR/debootstrap.log" >&2; die "debootstrap failed"; }
      # pip and apt inside image builds verify TLS with the host's CA bundle.
      mkdir -p "$rootfs/etc/ssl/certs"
      cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
      rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
      tar -C "$rootfs" -cf "$rootfs.tar.tmp" . && mv "$rootfs.tar.tmp" "$rootfs.tar" && rm -rf "$rootfs"
    fi
    docker import --change 'CMD ["bash"]' "$rootfs.tar" debian:bookworm-slim >/dev/null
    log "debian:bookworm-slim: imported"
  fi
  have_image python:3.11-slim-bookworm || docker_build python:3.11-slim-bookworm "$HACK_DIR/images/python.Dockerfile"
  have_image postgres:15-bookworm || docker_build postgres:15-bookworm "$HACK_DIR/images/postgres.Dockerfile"
  have_image "apache/kafka:$KAFKA_VERSION" || build_kafka_image
  log "base images ready ($((SECONDS - start))s): ${BASE_IMAGES[*]}"
}

# The Kafka distribution's jars (hack/kafka-jars: Maven Central, cached), then the image from
# them: see hack/images/kafka/Dockerfile.
build_kafka_image() {
  local libs
  libs=$(MLSHIP_CACHE_DIR=$CACHE_DIR "$HACK_DIR/kafka-jars") || die "resolving Kafka's jars failed"
  docker_build "apache/kafka:$KAFKA_VERSION" "$HACK_DIR/images/kafka/Dockerfile" "$libs"
}

# docker_build TAG DOCKERFILE [DIR]: builds with the files of the Dockerfile's directory (not its
# subdirectories: hack/images/kafka is another image's context), and DIR copied in under its own
# name, as the context.
docker_build() {
  local tag=$1 file=$2 extra=${3:-} ctx
  log "building $tag"
  ctx=$(mktemp -d)
  find "$(dirname "$file")" -maxdepth 1 -type f -exec cp {} "$ctx"/ \;
  [ -z "$extra" ] || cp -r "$extra" "$ctx/"
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/host-ca-certificates.crt"
  docker build -q --network host -t "$tag" -f "$ctx/$(basename "$file")" "$ctx" >"$CACHE_DIR/build-image.log" 2>&1 \
    || { tail -20 "$CACHE_DIR/build-image.log" >&2; rm -rf "$ctx"; die "building $tag failed"; }
  rm -rf "$ctx"
}

# Images the cluster itself runs: the pod sandbox, CoreDNS and metrics-server, from binaries built here.
build_cluster_images() {
  local dir
  if ! have_image "$PAUSE_IMAGE"; then
    dir=$(mktemp -d)
    gcc -Os -static -o "$dir/pause" "$HACK_DIR/images/pause.c"
    tar -C "$dir" -c pause | docker import --change 'ENTRYPOINT ["/pause"]' --change 'USER 65535' - "$PAUSE_IMAGE" >/dev/null
    rm -rf "$dir"
  fi
  if ! have_image "$COREDNS_IMAGE"; then
    dir=$(mktemp -d)
    cp "$BIN_DIR/coredns" "$dir/coredns"
    tar -C "$dir" -c coredns | docker import --change 'ENTRYPOINT ["/coredns"]' --change 'USER 65532' - "$COREDNS_IMAGE" >/dev/null
    rm -rf "$dir"
  fi
  if ! have_image "$METRICS_SERVER_IMAGE"; then
    dir=$(mktemp -d)
    cp "$BIN_DIR/metrics-server" "$dir/metrics-server"
    tar -C "$dir" -c metrics-server | docker import --change 'ENTRYPOINT ["/metrics-server"]' \
      --change 'USER 65534' - "$METRICS_SERVER_IMAGE" >/dev/null
    rm -rf "$dir"
  fi
}

# Copies images from Docker into the cluster's containerd (its CRI namespace, k8s.io), skipping
# those whose image ID the cluster has already under that name.
load_images() {
  [ $# -gt 0 ] || die "usage: hack/cluster load IMAGE..."
  [ -S "$CONTAINERD_SOCK" ] || die "the cluster is not running (no $CONTAINERD_SOCK): run 'hack/cluster up' first"
  local img want=()
  for img in "$@"; do
    have_image "$img" || die "no such image in Docker: $img"
    if [ "$(cluster_image_id "$img")" = "$(docker image inspect -f '{{.Id}}' "$img")" ]; then
      log "$img: already in the cluster"
    else
      want+=("$img")
    fi
  done
  [ ${#want[@]} -gt 0 ] || return 0
  log "loading into the cluster: ${want[*]}"
  docker save "${want[@]}" | ctr -a "$CONTAINERD_SOCK" -n k8s.io images import - >/dev/null \
    || die "importing ${want[*]} into the cluster's containerd failed"
}

# The ID (config digest) of the image the cluster's containerd has under that name, or nothing.
cluster_image_id() {
  crictl --runtime-endpoint "unix://$CONTAINERD_SOCK" inspecti -o go-template --template '{{.status.id}}' "$1" 2>/dev/null || true
}
