#!/bin/sh
# Makes the TLS material of the etcd example cluster in certs/ (ignored by git):
# a private CA and, for node-a, node-b and node-c, a key and a certificate signed by it whose
# CN is the node id (the grpc transport requires CN == node id when tls_ca_cert is set) and
# whose subjectAltName covers localhost and 127.0.0.1 (clients verify the server's address).
# Usage: make-certs.sh [OUT_DIR]   (default: certs/ next to this script). Needs openssl.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/certs"}
days=${CERT_DAYS:-365}
command -v openssl >/dev/null 2>&1 || { echo "make-certs.sh: openssl is not installed" >&2; exit 1; }
mkdir -p "$out"
cd "$out"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout ca.key -out ca.pem -days "$days" -subj "/CN=gatestream-example-ca" 2>/dev/null
for node in node-a node-b node-c; do
  printf 'subjectAltName=DNS:localhost,DNS:%s,IP:127.0.0.1\n' "$node" > "$node.ext"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$node.key" -out "$node.csr" -subj "/CN=$node" 2>/dev/null
  openssl x509 -req -in "$node.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -out "$node.pem" -days "$days" -extfile "$node.ext" 2>/dev/null
  rm -f "$node.csr" "$node.ext"
done
chmod 600 ./*.key
echo "certificates for node-a, node-b, node-c in $out"
