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
port=${RGPU_DEMO_PORT:-19876}

token=$($RGPU token --name demo | head -n 1)
echo "== token: $token"
echo "== starting rgpu server on 127.0.0.1:$port (QUIC and TCP+TLS)"
timeout 300 $RGPU server --bind 127.0.0.1 --port "$port" --token "$token" \
    --state-dir "$work/server" >"$work/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "listening on" "$work/server.log" && break; sleep 0.1; done
cat "$work/server.log"
echo
echo "== rgpu info over QUIC"
timeout 60 $RGPU info -s "127.0.0.1:$port" -t "$token" --transport quic
echo
echo "== rgpu info over TCP+TLS"
timeout 60 $RGPU info -s "127.0.0.1:$port" -t "$token" --transport tcp
echo
echo "== a wrong token is refused"
timeout 60 $RGPU info -s "127.0.0.1:$port" -t "$($RGPU token | head -n 1)" || true
echo
echo "== rgpu client daemon pooling the server"
timeout 300 $RGPU client -s "127.0.0.1:$port" -t "$token" >"$work/client.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    $RGPU status 2>/dev/null | grep -q " connected" && break; sleep 0.2
done
$RGPU status
echo
echo "demo finished"
