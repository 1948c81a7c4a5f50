#!/usr/bin/env bash
# Set up everything rgpu needs on a Debian/Ubuntu machine: system packages (Python, a C
# compiler, the Vulkan loader, Mesa lavapipe, vulkaninfo, glslang, validation layers) and a
# virtual environment in .venv with rgpu installed (editable) and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

APT_PACKAGES=(python3 python3-venv python3-dev python3-pip build-essential pkg-config
              libvulkan1 libvulkan-dev mesa-vulkan-drivers vulkan-tools glslang-tools
              vulkan-validationlayers zstd)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup: rgpu needs Python >= 3.11 (found $("$PYTHON" --version)); set PYTHON=" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
log=$(mktemp /tmp/rgpu-setup.XXXXXX.log)
if ! { .venv/bin/python -m pip install --upgrade pip setuptools wheel &&
       .venv/bin/python -m pip install -e ".[test,nvidia]"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "setup: pip install failed (full log: $log)" >&2
    exit 1
fi
rm -f "$log"
.venv/bin/python -c 'import rgpu, aioquic, msgpack, lz4, vulkan' || {
    echo "setup: the rgpu install is incomplete (see pip's output above)" >&2; exit 1; }
echo "setup: done (.venv/bin/rgpu)"
