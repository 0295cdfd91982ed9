#!/usr/bin/env bash
# The README's run command: installs what the gateway needs, builds it with its built-in plugins,
# and runs it on the embedded quickstart config with a local demo upstream.
#   gateway:        http://127.0.0.1:8080
#   demo upstream:  http://127.0.0.1:9090 (echoes what it receives)
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
exec cargo run --release --locked -p airlock -- run --quickstart "$@"
