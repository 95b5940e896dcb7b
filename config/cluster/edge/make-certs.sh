#!/bin/sh
# Makes the TLS material of the edge example (central and edge) in certs/ (ignored by git):
# the static-tcp example's script with this folder and these node ids (a private CA, and for
# each node a key and a certificate whose CN is the node id).
# Usage: make-certs.sh [OUT_DIR [NODE_ID...]]   (default: certs/ here; central edge)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/certs}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] || set -- central edge
exec sh "$here/../static-tcp/make-certs.sh" "$out" "$@"
