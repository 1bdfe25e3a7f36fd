#!/usr/bin/env bash
# Builds the Python example carrier into a Herald component:
#
#   sdk/examples/python/build.sh [OUT.wasm]     (default: sdk/examples/python/carrier.wasm)
#
# 1. installs componentize-py (pinned) into a venv outside the clone, once:
#    ${HERALD_TOOLCHAINS:-/var/tmp/herald-toolchains}/python-componentize-py-<version>;
# 2. runs the native unit tests (python3 -m unittest);
# 3. builds against sdk/wit/v0.1.0, world carrier-plugin, and prints OUT and its size.
#
# Exit status: 0 built; 3 the toolchain cannot be installed (one line on stderr says
# why); anything else a real failure (a test, the build). Safe to run twice at once.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
wit=$(cd "$here/../../wit/v0.1.0" && pwd)
out=${1:-$here/carrier.wasm}
toolchains=${HERALD_TOOLCHAINS:-/var/tmp/herald-toolchains}
venv=$toolchains/python-componentize-py-$COMPONENTIZE_PY_VERSION

unavailable() {
    echo "build.sh: cannot install componentize-py $COMPONENTIZE_PY_VERSION: $*" >&2
    exit 3
}

command -v python3 >/dev/null || unavailable "python3 is not on the PATH"
command -v flock >/dev/null || unavailable "flock (util-linux) is not on the PATH"
mkdir -p "$toolchains" || unavailable "cannot create $toolchains"

# What the venv was made from; a different python3 or pin means a fresh venv.
wanted="componentize-py==$COMPONENTIZE_PY_VERSION $(python3 -c 'import sys; print(sys.version.split()[0])')"

install_toolchain() {
    rm -rf "$venv"
    python3 -m venv "$venv" || unavailable "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    local log=$venv/pip.log
    if ! "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "componentize-py==$COMPONENTIZE_PY_VERSION" >"$log" 2>&1; then
        unavailable "pip install failed (is PyPI reachable?): $(grep -v '^\s*$' "$log" | tail -n 1)"
    fi
    # Written last: a venv without it is half-installed and gets redone.
    echo "$wanted" >"$venv/herald-installed"
}

(
    # One installer at a time; a second build waits here, then finds the venv ready.
    flock 9
    if [[ "$(cat "$venv/herald-installed" 2>/dev/null)" != "$wanted" ]]; then
        echo "build.sh: installing componentize-py $COMPONENTIZE_PY_VERSION into $venv" >&2
        install_toolchain
    fi
) 9>"$toolchains/python-componentize-py-$COMPONENTIZE_PY_VERSION.lock"

# No __pycache__ in the clone from the tests.
export PYTHONDONTWRITEBYTECODE=1
(cd "$here" && python3 -m unittest --quiet)

# componentize-py's output differs from build to build (a few KB), so Herald's
# compiled-code cache (keyed by the component's hash) would miss after every
# build: OUT is rebuilt only when an input changed.
inputs=$({ echo "$wanted"; cat "$0" "$here"/*.py "$wit"/*.wit; } | sha256sum | cut -d' ' -f1)
if [[ -e "$out" && "$(cat "$out.inputs" 2>/dev/null)" == "$inputs" ]]; then
    echo "$out $(stat -c %s "$out") bytes (up to date)"
    exit 0
fi

# Build into a private file and move it into place, so concurrent builds never
# leave a half-written OUT. VIRTUAL_ENV keeps componentize-py to the toolchain's
# venv instead of adding the system's site-packages to the app's path.
mkdir -p "$(dirname "$out")"
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
(
    cd "$here"
    VIRTUAL_ENV=$venv "$venv/bin/componentize-py" --quiet -d "$wit" -w carrier-plugin \
        componentize --python-path "$here" app --output "$tmp"
)
rm -rf "$here/__pycache__" # componentize-py's own interpreter writes one
chmod 644 "$tmp" # mktemp makes it private
mv "$tmp" "$out"
trap - EXIT
echo "$inputs" >"$out.inputs"
echo "$out $(stat -c %s "$out") bytes"
