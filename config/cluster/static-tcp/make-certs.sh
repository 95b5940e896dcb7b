#!/bin/sh
# Makes the TLS material of the static-tcp example cluster in certs/ (ignored by git): a
# private CA and, for each node, a key and a certificate signed by it whose CN is the node id
# (the tcp transport requires CN == node id on both ends of every connection).
# Usage: make-certs.sh [OUT_DIR [NODE_ID...]]
#   OUT_DIR defaults to certs/ next to this script, the node ids to node-a node-b node-c.
#   A CA already in OUT_DIR (ca.pem + ca.key) is reused, so nodes can be added later.
# Needs the openssl CLI. CERT_DAYS sets the validity (default 365).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/certs"}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] || set -- node-a node-b node-c
days=${CERT_DAYS:-365}
command -v openssl >/dev/null 2>&1 || { echo "make-certs.sh: openssl is not installed" >&2; exit 1; }
mkdir -p "$out"
cd "$out"
if [ ! -f ca.pem ] || [ ! -f ca.key ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout ca.key -out ca.pem -days "$days" -subj "/CN=gatestream-static-tcp-ca" 2>/dev/null
fi
for node in "$@"; do
  # Both ends of a connection present their certificate: client and server use.
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:localhost,DNS:%s,IP:127.0.0.1\n' \
    "$node" > "$node.ext"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$node.key" -out "$node.csr" -subj "/CN=$node" 2>/dev/null
  openssl x509 -req -in "$node.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -out "$node.pem" -days "$days" -extfile "$node.ext" 2>/dev/null
  rm -f "$node.csr" "$node.ext"
done
chmod 600 ./*.key
echo "certificates for $* in $out"
