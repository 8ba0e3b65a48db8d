#!/usr/bin/env bash
# A real Kubernetes API server for bqsteward's tests and demo: kube-apiserver and etcd built from their
# Go modules (no Docker, no kind, no envtest downloads here), plus kubectl of the same version and helm
# for the chart tests. Built once per machine into a cache outside the repo, started on loopback
# with a fresh data directory, stopped by PID.
#
#   scripts/kube.sh build    build what is missing or out of date (cold: ~5 min on 2 cores)
#   scripts/kube.sh start    build if needed, start etcd + kube-apiserver (idempotent: reuses running
#                            ones) and print `export KUBECONFIG=…` (admin) and `export PATH=…` (the
#                            built tools) on stdout; progress goes to stderr
#   scripts/kube.sh env      print the same export lines for a running server
#   scripts/kube.sh stop     stop only what this script started (PID files) and drop its data
#   scripts/kube.sh status   exit 0 while the API server answers /readyz
#
# Every request made by a ServiceAccount is written to <state>/audit.log (JSON lines, metadata level),
# which is how the tests check that bqsteward's RBAC is exactly what it uses.
#
# What runs: etcd (go.etcd.io/etcd/server/v3, scripts/etcd) and kube-apiserver (k8s.io/kubernetes,
# scripts/k8s) with self-signed serving certificates, a service-account signing key (TokenRequest and
# `kubectl create token` work), `--authorization-mode=RBAC` and a static admin token in group
# system:masters. No controller-manager, scheduler or kubelet: namespaces are never finalized (a
# deleted namespace stays Terminating), there is no garbage collector (ownerReferences do not
# cascade), no ServiceAccount token controller and no pods ever run.
#
# Settings (environment): BQSTEWARD_KUBE_CACHE (default ~/.cache/bqsteward/k8s-v<version>: the built
# binaries), BQSTEWARD_KUBE_STATE (default <repo>/.kube-local: certificates, data, logs, PID files),
# BQSTEWARD_KUBE_PORT (19443, the API server's HTTPS port), BQSTEWARD_ETCD_PORT (19379; the peer port
# is the next one).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
k8s_version=v1.34.4
cache=${BQSTEWARD_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bqsteward/k8s-$k8s_version}
bin=$cache/bin
state=${BQSTEWARD_KUBE_STATE:-$here/.kube-local}
port=${BQSTEWARD_KUBE_PORT:-19443}
etcd_port=${BQSTEWARD_ETCD_PORT:-19379}
etcd_peer_port=$((etcd_port + 1))
kubeconfig=$state/admin.kubeconfig

log() { echo "kube: $*" >&2; }

# The stamp of a tool's sources (its module directory): a changed go.mod/go.sum/main rebuilds it.
stamp_of() { cat "$here/scripts/$1"/go.mod "$here/scripts/$1"/go.sum "$here/scripts/$1"/*.go | sha256sum | cut -c1-16; }

build_one() { # name module-dir package [ldflags]
  local name=$1 dir=$2 pkg=$3 ldflags=${4:-} stamp
  stamp=$(stamp_of "$dir")
  if [ -x "$bin/$name" ] && [ "$(cat "$bin/$name.stamp" 2>/dev/null)" = "$stamp" ]; then return 0; fi
  log "building $name from $pkg (cached in $bin)"
  local t0=$SECONDS
  (cd "$here/scripts/$dir" && GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -ldflags="-s -w $ldflags" -o "$bin/$name.tmp" "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
  echo "$stamp" >"$bin/$name.stamp"
  log "built $name in $((SECONDS - t0)) s"
}

build() {
  command -v go >/dev/null 2>&1 || { log "the Go toolchain (go) is needed to build the API server"; exit 1; }
  mkdir -p "$bin"
  # One build at a time per machine (parallel test binaries may all ask).
  exec 8>"$cache/build.lock"
  flock 8
  build_one etcd etcd .
  # The version the binaries report (/version, `kubectl version`): a plain build says v0.0.0-master.
  local v=k8s.io/component-base/version minor=${k8s_version#v1.}
  local kv="-X $v.gitVersion=$k8s_version -X $v.gitMajor=1 -X $v.gitMinor=${minor%%.*} -X $v.gitTreeState=clean"
  build_one kube-apiserver k8s k8s.io/kubernetes/cmd/kube-apiserver "$kv"
  # kubectl of the same version (a machine's own may be older than the +/-1 supported skew).
  build_one kubectl k8s k8s.io/kubernetes/cmd/kubectl "$kv"
  build_one helm helm helm.sh/helm/v3/cmd/helm
  exec 8>&-
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
token() { cat "$state/admin.token"; }
ready() {
  [ -f "$state/admin.token" ] &&
    curl -fsS -o /dev/null --cacert "$state/pki/ca.crt" -H "Authorization: Bearer $(token)" \
      "https://127.0.0.1:$port/readyz" 2>/dev/null
}
etcd_ready() { curl -fsS -o /dev/null "http://127.0.0.1:$etcd_port/health" 2>/dev/null; }

wait_for() { # name check pidfile seconds
  local i
  for i in $(seq 1 $(($4 * 4))); do
    if "$2"; then return 0; fi
    if ! alive "$3"; then log "$1 exited; see $state/$1.log"; tail -20 "$state/$1.log" >&2; return 1; fi
    sleep 0.25
  done
  log "$1 did not become ready in $4 s; see $state/$1.log"
  tail -20 "$state/$1.log" >&2
  return 1
}

pki() {
  local p=$state/pki
  rm -rf "$p" && mkdir -p "$p"
  (
    cd "$p"
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout ca.key -out ca.crt \
      -subj "/CN=bqsteward-test-ca" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout server.key -out server.csr \
      -subj "/CN=kube-apiserver" 2>/dev/null
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth" \
      "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc" \
      >server.ext
    openssl x509 -req -sha256 -days 3650 -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -extfile server.ext -out server.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
  openssl rand -hex 24 >"$state/admin.token"
  printf '%s,admin,admin,"system:masters"\n' "$(token)" >"$state/tokens.csv"
  chmod 600 "$state/admin.token" "$state/tokens.csv" "$p"/*.key
}

write_kubeconfig() {
  local ca
  ca=$(base64 -w0 "$state/pki/ca.crt")
  cat >"$kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority-data: $ca
users:
- name: admin
  user:
    token: $(token)
contexts:
- name: local
  context: {cluster: local, user: admin, namespace: default}
current-context: local
EOF
  chmod 600 "$kubeconfig"
}

print_env() {
  echo "export KUBECONFIG=$kubeconfig"
  echo "export PATH=$bin:\$PATH"
  echo "export BQSTEWARD_KUBE_BIN=$bin"
  echo "export BQSTEWARD_KUBE_AUDIT_LOG=$state/audit.log"
  # kubectl's discovery cache belongs to this server: one left by an earlier server on the same port
  # would hide the CRDs for minutes.
  echo "export KUBECACHEDIR=$state/kubectl-cache"
}

start() {
  mkdir -p "$state"
  exec 9>"$state/start.lock"
  flock 9
  if alive "$state/kube-apiserver.pid" && ready; then
    log "already running on https://127.0.0.1:$port"
    print_env
    return 0
  fi
  build
  stop_processes
  rm -rf "$state/etcd-data" "$state/kubectl-cache"
  pki
  # Every request of a service account is written to audit.log (the RBAC test compares what the
  # controller did with what its roles grant); the rest of the traffic is not logged.
  rm -f "$state/audit.log"
  cat >"$state/audit-policy.yaml" <<'EOF2'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
EOF2
  local t0=$SECONDS
  # The servers must not inherit the lock descriptors (8>&- 9>&-), or the next start waits forever.
  log "starting etcd on 127.0.0.1:$etcd_port"
  setsid "$bin/etcd" --name bqsteward-test --data-dir "$state/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "bqsteward-test=http://127.0.0.1:$etcd_peer_port" \
    --unsafe-no-fsync --log-level warn >"$state/etcd.log" 2>&1 </dev/null 8>&- 9>&- &
  echo $! >"$state/etcd.pid"
  wait_for etcd etcd_ready "$state/etcd.pid" 30
  log "starting kube-apiserver $k8s_version on https://127.0.0.1:$port"
  setsid "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$port" \
    --tls-cert-file "$state/pki/server.crt" --tls-private-key-file "$state/pki/server.key" \
    --client-ca-file "$state/pki/ca.crt" --cert-dir "$state/pki" \
    --token-auth-file "$state/tokens.csv" \
    --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$state/pki/sa.pub" \
    --service-account-signing-key-file "$state/pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/24 \
    --profiling=false --enable-priority-and-fairness=false \
    --audit-policy-file "$state/audit-policy.yaml" --audit-log-path "$state/audit.log" \
    --audit-log-format json --audit-log-mode blocking \
    >"$state/kube-apiserver.log" 2>&1 </dev/null 8>&- 9>&- &
  echo $! >"$state/kube-apiserver.pid"
  wait_for kube-apiserver ready "$state/kube-apiserver.pid" 120
  write_kubeconfig
  log "ready in $((SECONDS - t0)) s (KUBECONFIG=$kubeconfig)"
  print_env
}

stop_one() { # pidfile
  local pid
  if alive "$1"; then
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

stop_processes() {
  stop_one "$state/kube-apiserver.pid"
  stop_one "$state/etcd.pid"
}

case "${1:-}" in
  build) build ;;
  start) start ;;
  env)
    ready || { log "not running (scripts/kube.sh start)"; exit 1; }
    print_env
    ;;
  stop)
    stop_processes
    rm -rf "$state/etcd-data"
    log "stopped"
    ;;
  status)
    if alive "$state/kube-apiserver.pid" && ready; then
      log "kube-apiserver $k8s_version answers on https://127.0.0.1:$port"
    else
      log "not running"
      exit 1
    fi
    ;;
  *)
    echo "usage: $0 build|start|env|stop|status" >&2
    exit 2
    ;;
esac
