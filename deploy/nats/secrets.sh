#!/usr/bin/env bash
# Create the two Secrets deploy/ expects in ferry-system, the self-signed way (no cert-manager):
#   nats-tls          a CA and a server certificate for NATS (clients and cluster routes), ca.crt
#                     is what every service trusts (mounted at /etc/ferry/nats-tls/ca.crt);
#   ferry-nats-users  one random password per NATS user (deploy/base/nats/users/*.yaml).
# Rerunning it rotates everything (restart nats and the services afterwards).
# Usage: deploy/nats/secrets.sh [--namespace ferry-system] [--days 365]
set -euo pipefail
namespace=ferry-system days=365
while [ $# -gt 0 ]; do
  case "$1" in
    --namespace) namespace=$2; shift 2 ;;
    --days) days=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cd "$work"
echo "==> a self-signed CA and a NATS server certificate (valid $days days)"
openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=ferry-nats-ca" \
  -keyout ca.key -out ca.crt 2>/dev/null
sans="DNS:nats,DNS:nats.$namespace,DNS:nats.$namespace.svc,DNS:nats.$namespace.svc.cluster.local"
sans="$sans,DNS:*.nats-headless.$namespace.svc,DNS:*.nats-headless.$namespace.svc.cluster.local,DNS:localhost"
openssl req -newkey rsa:2048 -nodes -subj "/CN=nats.$namespace.svc" -keyout tls.key -out tls.csr 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$sans" > ext.cnf
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
  -extfile ext.cnf -out tls.crt 2>/dev/null
kubectl -n "$namespace" create secret generic nats-tls \
  --from-file=ca.crt --from-file=tls.crt --from-file=tls.key --dry-run=client -o yaml | kubectl apply -f -
echo "==> a password per NATS user"
args=()
for file in "$here"/../base/nats/users/*.yaml; do
  user=$(basename "$file" .yaml)
  args+=("--from-literal=$user=$(openssl rand -hex 24)")
done
kubectl -n "$namespace" create secret generic ferry-nats-users "${args[@]}" --dry-run=client -o yaml \
  | kubectl apply -f -
echo "==> done: restart nats and the services to pick up new secrets (kubectl -n $namespace rollout restart ...)"
