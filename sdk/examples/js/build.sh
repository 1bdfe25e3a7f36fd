#!/usr/bin/env bash
# Builds the JavaScript example carrier: ./build.sh [OUT.wasm]
#
# 1. Installs the pinned toolchain (package-lock.json: componentize-js and its
#    dependencies) with `npm ci` into a cache outside the clone,
#    ${HERALD_TOOLCHAINS:-/var/tmp/herald-toolchains}/js-<lockfile hash>,
#    unless it is already there.
# 2. Runs the native tests (`node --test`).
# 3. Builds the component (world carrier-plugin of sdk/wit/v0.1.0) to OUT.wasm,
#    by default sdk/examples/js/carrier.wasm, and prints its path and size.
#
# Exit status: 0 built; 3 the toolchain cannot be installed (no node or npm,
# registry unreachable), with a one-line reason on stderr; anything else is a
# real failure (a test, the build). Safe to run twice at once.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
wit="$here/../../wit/v0.1.0"
out=$(realpath -m "${1:-$here/carrier.wasm}")
node_major=20

unavailable() {
    echo "build.sh: toolchain unavailable: $*" >&2
    exit 3
}

command -v node >/dev/null || unavailable "node is not on the PATH (Node.js $node_major is needed)"
command -v npm >/dev/null || unavailable "npm is not on the PATH"
major=$(node -p 'process.versions.node.split(".")[0]')
((major >= node_major)) || unavailable "node $(node --version) is too old (Node.js $node_major is needed)"

cache=${HERALD_TOOLCHAINS:-/var/tmp/herald-toolchains}
hash=$(sha256sum "$here/package-lock.json" | cut -c1-16)
toolchain="$cache/js-$hash"
mkdir -p "$cache"

# One installer at a time; the `.installed` mark is written last, so a dir
# without it (an install that was cut short) is installed again.
exec 9>"$toolchain.lock"
flock 9
if [[ ! -e "$toolchain/.installed" ]]; then
    echo "installing the JavaScript toolchain into $toolchain" >&2
    rm -rf "$toolchain"
    mkdir -p "$toolchain"
    cp "$here/package.json" "$here/package-lock.json" "$toolchain/"
    log="$toolchain.npm.log"
    if ! (cd "$toolchain" && npm ci --no-audit --no-fund --ignore-scripts >"$log" 2>&1); then
        # Unreachable registry: nothing to fix here. Reachable: a real failure.
        if ! npm ping >/dev/null 2>&1; then
            unavailable "the npm registry is unreachable (npm ci failed, log: $log)"
        fi
        cat "$log" >&2
        echo "build.sh: npm ci failed in $toolchain" >&2
        exit 1
    fi
    touch "$toolchain/.installed"
fi
flock -u 9

(cd "$here" && node --test test/) >&2 # stdout is only the line naming the build

# componentize-js embeds a random build path, so two builds of the same
# sources differ and Herald's compiled-code cache (keyed by the component's
# hash) would miss after every build: OUT is rebuilt only when an input changed.
inputs=$(cat "$0" "$here/package-lock.json" "$here"/src/*.js "$wit"/*.wit | sha256sum | cut -d' ' -f1)
if [[ -e "$out" && "$(cat "$out.inputs" 2>/dev/null)" == "$inputs" ]]; then
    echo "$out ($(stat -c %s "$out") bytes, up to date)"
    exit 0
fi

# Build next to OUT and rename, so OUT is never a half-written file, even
# when two builds run at once.
mkdir -p "$(dirname "$out")"
partial=$(mktemp --suffix=.partial "$out.XXXXXX")
trap 'rm -f "$partial"' EXIT
# Every WASI feature disabled: the component imports only Herald's `host` and
# `http`. Without `stdio` an uncaught exception would trap with no message;
# src/carrier.js's `logUncaught` logs it through Herald's `log` instead.
"$toolchain/node_modules/.bin/componentize-js" "$here/src/component.js" \
    --wit "$wit" --world-name carrier-plugin \
    --disable stdio random clocks http fetch-event \
    -o "$partial" >&2
chmod 644 "$partial" # mktemp made it private
mv "$partial" "$out"
echo "$inputs" >"$out.inputs"
echo "$out ($(stat -c %s "$out") bytes)"
