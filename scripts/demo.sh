#!/usr/bin/env bash
# Set up (scripts/setup.sh), then show rgpu end to end on this machine: a server on loopback
# serving its GPUs (real NVIDIA GPUs where present; otherwise the emulated CUDA device and Mesa
# lavapipe), `rgpu info` over QUIC and over TCP+TLS, and a client daemon pooling the server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RGPU=.venv/bin/rgpu
work=$(mktemp -d /tmp/rgpu-demo.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
export XDG_CONFIG_HOME="$work/config" XDG_RUNTIME_DIR="$work/run" XDG_STATE_HOME="$work/state"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
# A port free for both TCP and UDP (QUIC), unless RGPU_DEMO_PORT says otherwise.
port=${RGPU_DEMO_PORT:-$(.venv/bin/python - <<'PY'
import socket
while True:
    t = socket.socket(); t.bind(("127.0.0.1", 0)); port = t.getsockname()[1]
    u = socket.socket(type=socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        u.close(); t.close()
    print(port); break
PY
)}

token=$($RGPU token --name demo | sed -n 1p)
echo "== token: $token"
echo "== starting rgpu server on 127.0.0.1:$port (QUIC and TCP+TLS)"
timeout 300 $RGPU server --bind 127.0.0.1 --port "$port" --token "$token" \
    --state-dir "$work/server" >"$work/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 150); do
    grep -q "listening on" "$work/server.log" && break
    kill -0 "${pids[0]}" 2>/dev/null || break
    sleep 0.1
done
cat "$work/server.log"
grep -q "listening on" "$work/server.log" || { echo "demo: the server did not start" >&2; exit 1; }
echo
echo "== rgpu info over QUIC"
timeout 60 $RGPU info -s "127.0.0.1:$port" -t "$token" --transport quic
echo
echo "== rgpu info over TCP+TLS"
timeout 60 $RGPU info -s "127.0.0.1:$port" -t "$token" --transport tcp
echo
echo "== a wrong token is refused"
timeout 60 $RGPU info -s "127.0.0.1:$port" -t "$($RGPU token | sed -n 1p)" || true
echo
echo "== rgpu client daemon pooling the server"
timeout 300 $RGPU client -s "127.0.0.1:$port" -t "$token" >"$work/client.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    $RGPU status 2>/dev/null | grep -q " connected" && break; sleep 0.2
done
$RGPU status
echo
echo "== vulkaninfo through rgpu run (the server's Vulkan GPU, through the rgpu ICD)"
timeout 120 $RGPU run -- vulkaninfo --summary 2>/dev/null | sed -n '/^Devices:/,$p'
echo
echo "== a cuda-python program (driver API + PTX) through rgpu run"
timeout 120 $RGPU run -- .venv/bin/python examples/saxpy_driver.py
if command -v nvcc >/dev/null 2>&1; then
    echo
    echo "== an unmodified nvcc-built CUDA program through rgpu run"
    nvcc -o "$work/vector_add" examples/vector_add.cu
    timeout 120 $RGPU run -- "$work/vector_add"
else
    echo "(nvcc not found: skipping the CUDA C++ example, examples/vector_add.cu)"
fi
echo
echo "demo finished"
