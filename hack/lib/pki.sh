# shellcheck shell=bash
# The cluster's certificates and kubeconfigs, generated at bring-up (never committed).

# cert NAME CN ORG [SAN]: a key and a certificate signed by the cluster CA.
cert() {
  local name=$1 cn=$2 org=$3 san=${4:-}
  [ -f "$PKI_DIR/$name.crt" ] && return
  local subj="/CN=$cn" ext
  [ -n "$org" ] && subj="/O=$org$subj"
  ext=$(mktemp)
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [ -n "$san" ]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$san"
    else echo "extendedKeyUsage=clientAuth"; fi
  } > "$ext"
  openssl genrsa -out "$PKI_DIR/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI_DIR/$name.key" -subj "$subj" -out "$PKI_DIR/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI_DIR/$name.csr" -CA "$PKI_DIR/ca.crt" -CAkey "$PKI_DIR/ca.key" \
    -CAcreateserial -days 365 -extfile "$ext" -out "$PKI_DIR/$name.crt" 2>/dev/null
  rm -f "$ext" "$PKI_DIR/$name.csr"
}

kubeconfig() {
  local name=$1 user=$2 file=$STATE_DIR/$1.kubeconfig
  [ -f "$file" ] && return
  cat > "$file" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: mlship
  cluster:
    certificate-authority: $PKI_DIR/ca.crt
    server: https://$(node_ip):$APISERVER_PORT
users:
- name: $user
  user:
    client-certificate: $PKI_DIR/$name.crt
    client-key: $PKI_DIR/$name.key
contexts:
- name: mlship
  context: {cluster: mlship, user: $user}
current-context: mlship
KCFG
  chmod 600 "$file"
}

make_pki() {
  local ip
  ip=$(node_ip)
  mkdir -p "$PKI_DIR" && chmod 700 "$PKI_DIR"
  if [ ! -f "$PKI_DIR/ca.crt" ]; then
    step "generating the cluster's certificates"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=mlship-cluster-ca" \
      -keyout "$PKI_DIR/ca.key" -out "$PKI_DIR/ca.crt" 2>/dev/null
    openssl genrsa -out "$PKI_DIR/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub" 2>/dev/null
  fi
  cert apiserver kube-apiserver "" \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,DNS:$NODE_NAME,IP:127.0.0.1,IP:$ip,IP:$KUBERNETES_SVC_IP"
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cert kubelet-serving "system:node:$NODE_NAME" system:nodes "DNS:$NODE_NAME,DNS:localhost,IP:127.0.0.1,IP:$ip"
  front_proxy_pki
  cert admin kubernetes-admin system:masters
  cert controller-manager system:kube-controller-manager ""
  cert scheduler system:kube-scheduler ""
  cert kubelet "system:node:$NODE_NAME" system:nodes
  cert kube-proxy system:kube-proxy ""
  cert provisioner system:mlship-provisioner ""
  local n
  for n in admin controller-manager scheduler kubelet kube-proxy provisioner; do kubeconfig "$n" "$n"; done
}

# The aggregation layer (metrics-server's metrics.k8s.io API): the API server proxies requests to
# an extension API server with a client certificate of a CA of its own, so that no other
# certificate of the cluster CA can assert a user to the extension server.
front_proxy_pki() {
  [ -f "$PKI_DIR/front-proxy-client.crt" ] && return
  local ext
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=mlship-front-proxy-ca" \
    -keyout "$PKI_DIR/front-proxy-ca.key" -out "$PKI_DIR/front-proxy-ca.crt" 2>/dev/null
  ext=$(mktemp)
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=clientAuth" > "$ext"
  openssl genrsa -out "$PKI_DIR/front-proxy-client.key" 2048 2>/dev/null
  openssl req -new -key "$PKI_DIR/front-proxy-client.key" -subj "/CN=front-proxy-client" \
    -out "$PKI_DIR/front-proxy-client.csr" 2>/dev/null
  openssl x509 -req -in "$PKI_DIR/front-proxy-client.csr" -CA "$PKI_DIR/front-proxy-ca.crt" \
    -CAkey "$PKI_DIR/front-proxy-ca.key" -CAcreateserial -days 365 -extfile "$ext" \
    -out "$PKI_DIR/front-proxy-client.crt" 2>/dev/null
  rm -f "$ext" "$PKI_DIR/front-proxy-client.csr"
}
