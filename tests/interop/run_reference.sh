#!/bin/sh
# gatestream against a node of the Sirannon reference implementation (TypeScript) over gRPC with
# mutual TLS: builds the reference once into a cache, makes certificates with
# config/cluster/static-grpc/make-certs.sh, and runs the scenarios of interop.py against real
# gatestream processes. Not part of `make test`: the first run needs the npm registry.
#
# Usage: tests/interop/run_reference.sh [SCENARIO...]      (a b c d; default: all)
#
# Environment (all optional):
#   GS_BINARY           gatestream binary (default: build/gatestream)
#   GS_PLUGIN_DIR       its plugins (default: the binary's folder + /plugins)
#   GS_INTEROP_CACHE    where the reference is built (default: ~/.cache/gatestream-interop)
#   SIRANNON_REF        a git repository of assetcorp/sirannon-db (default: the local mirror
#                       /work/.mirror/assetcorp+sirannon-db/repo when present, else a clone
#                       from GitHub into the cache)
#   SIRANNON_REF_COMMIT the reference commit to build (default: pinned below)
#   NODE                node binary (default: node; Node 20 or newer)
#   GS_INTEROP_KEEP=1   keep logs and databases even when everything passes
#   GS_INTEROP_WAIT     seconds each convergence wait may take (default 60)
#   GS_INTEROP_LOG_LEVEL  gatestream log level (default info)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
commit=${SIRANNON_REF_COMMIT:-72b987c8f2333ec9ccc6426dfd45a62a625c15ef}
cache=${GS_INTEROP_CACHE:-"${XDG_CACHE_HOME:-$HOME/.cache}/gatestream-interop"}
node=${NODE:-node}
binary=${GS_BINARY:-"$root/build/gatestream"}
plugins=${GS_PLUGIN_DIR:-"$(dirname "$binary")/plugins"}

say() { printf 'run_reference: %s\n' "$*" >&2; }
die() { say "$*"; exit 2; }

command -v "$node" >/dev/null 2>&1 || die "node is not installed (Node 20 or newer)"
command -v npm >/dev/null 2>&1 || die "npm is not installed"
command -v python3 >/dev/null 2>&1 || die "python3 is not installed"
command -v openssl >/dev/null 2>&1 || die "openssl is not installed (make-certs.sh needs it)"
node_major=$("$node" -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || die "Node $node_major is too old: Node 20 or newer is needed"
[ -x "$binary" ] ||
    die "no gatestream binary at $binary: build it (make build) or set GS_BINARY"
[ -f "$plugins/gs_transport_grpc.so" ] ||
    die "no gs_transport_grpc.so in $plugins: build the grpc transport or set GS_PLUGIN_DIR"

# ---- the reference source ----

src=${SIRANNON_REF:-}
if [ -z "$src" ]; then
    if [ -d /work/.mirror/assetcorp+sirannon-db/repo ]; then
        src=/work/.mirror/assetcorp+sirannon-db/repo
    else
        src="$cache/src"
        if [ ! -d "$src" ]; then
            say "cloning https://github.com/assetcorp/sirannon-db into $src"
            git clone --quiet --no-checkout https://github.com/assetcorp/sirannon-db.git "$src"
        fi
    fi
fi
git -C "$src" cat-file -e "$commit^{commit}" 2>/dev/null ||
    git -C "$src" fetch --quiet origin "$commit" 2>/dev/null ||
    die "commit $commit is not in $src (set SIRANNON_REF to a clone that has it)"

# ---- build it once per commit ----
#
# The reference's own install (pnpm, the whole workspace) needs Node 22 and GitHub (one of its
# development dependencies is a GitHub tarball), so only what a replication node uses is
# installed here, at the versions its package.json pins, with npm: tsup and TypeScript to
# build, @grpc/grpc-js, grpc-health-check, @bufbuild/protobuf and better-sqlite3 to run.
# better-sqlite3 13 (its pin) needs Node 22; on Node 20 the newest 12.x is used, which the
# reference's peer range (>=12) accepts. Its prebuilt binary comes from GitHub; when that is
# out of reach npm builds it from source (python3, make, g++).

ref="$cache/ref-$commit"
if [ ! -f "$ref/.built" ]; then
    say "building the reference $commit in $ref (once; needs the npm registry)"
    rm -rf "$ref"
    mkdir -p "$ref"
    trap 'rm -rf "$ref"' EXIT
    git -C "$src" archive "$commit" packages/ts tsconfig.json | tar -x -C "$ref"
    "$node" - "$ref" "$node_major" <<'EOF'
const fs = require('fs')
const [ref, nodeMajor] = process.argv.slice(2)
const pkg = JSON.parse(fs.readFileSync(`${ref}/packages/ts/package.json`, 'utf8'))
const dev = pkg.devDependencies
const want = ['tsup', 'typescript', '@grpc/grpc-js', '@bufbuild/protobuf', 'grpc-health-check',
              'better-sqlite3']
const deps = {}
for (const name of want) {
  if (!dev[name]) throw new Error(`the reference no longer pins ${name}`)
  deps[name] = dev[name]
}
if (Number(nodeMajor) < 22 && /^1[3-9]\./.test(deps['better-sqlite3'])) {
  deps['better-sqlite3'] = '12.11.1'
}
fs.writeFileSync(`${ref}/package.json`, JSON.stringify({
  name: 'gatestream-interop-reference-build', private: true,
  description: 'what run_reference.sh installs to build and run the reference', dependencies: deps,
}, null, 2))
// Only the entry points a replication node imports; no type declarations.
fs.writeFileSync(`${ref}/packages/ts/tsup.interop.config.mjs`, `export default {
  entry: {
    'core/index': 'src/core/index.ts',
    'core/writer-worker': 'src/core/worker/entry.ts',
    'replication/index': 'src/replication/index.ts',
    'transport/grpc': 'src/transport/grpc/index.ts',
    'driver/better-sqlite3': 'src/drivers/better-sqlite3/index.ts',
  },
  format: ['esm'], platform: 'node', splitting: true, treeshake: true, dts: false, clean: true,
  outExtension: () => ({ js: '.mjs' }),
  external: ['better-sqlite3', '@grpc/grpc-js', 'grpc-health-check', '@bufbuild/protobuf',
             'etcd3', 'uWebSockets.js', /^node:/],
}
`)
EOF
    if [ -z "${npm_config_nodedir:-}" ] && [ -f /usr/include/node/node.h ]; then
        npm_config_nodedir=/usr # Debian's node headers: node-gyp needs no download
        export npm_config_nodedir
    fi
    (cd "$ref" && npm install --no-audit --no-fund --loglevel=error) ||
        die "npm install failed in $ref"
    (cd "$ref/packages/ts" && "$ref/node_modules/.bin/tsup" --config tsup.interop.config.mjs \
        >"$ref/build.log" 2>&1) ||
        { cat "$ref/build.log" >&2; die "building the reference failed"; }
    (cd "$ref" && "$node" --input-type=module -e \
        "await import('./packages/ts/dist/transport/grpc.mjs'); await import('better-sqlite3')") ||
        die "the built reference does not load"
    trap - EXIT
    touch "$ref/.built"
fi

# ---- the harness: package.json names the reference by path (.reference) ----
# npm would also resolve the reference's development dependencies through that path (one is a
# GitHub URL), so the link npm makes for a file: dependency is made here instead.

ln -sfn "$ref" "$here/.reference"
mkdir -p "$here/node_modules/@delali"
ln -sfn ../../.reference/packages/ts "$here/node_modules/@delali/sirannon-db"

# ---- certificates and the run ----

work=$(mktemp -d "${TMPDIR:-/tmp}/gs-interop-certs-XXXXXX")
trap 'rm -rf "$work"' EXIT
sh "$root/config/cluster/static-grpc/make-certs.sh" "$work/certs" >/dev/null

say "reference $commit ($("$node" --version)), gatestream $binary"
status=0
GS_BINARY=$binary GS_PLUGIN_DIR=$plugins GS_INTEROP_CERTS="$work/certs" GS_INTEROP_NODE=$node \
    PYTHONDONTWRITEBYTECODE=1 python3 "$here/interop.py" "$@" || status=$?
exit $status
