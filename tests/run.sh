#!/usr/bin/env bash
# The README's test command: installs what the tests need, builds everything, runs every test.
# `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Guests (built-in plugins, test plugins, the example plugin) compile to wasm32-wasip2.
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi

# The rate-limit tests start a real Redis (tests/tests/rate_limit.rs spawns it on a free port).
if ! command -v redis-server >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq redis-server
fi

# The examples and TLS tests drive the gateway with the real `curl`, as the READMEs do.
if ! command -v curl >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq curl
fi

# The hot-reload test keeps a real load generator running through 20 reloads (tests/tests/reload.rs).
if ! command -v wrk >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq wrk
fi

# The dashboard test loads the admin dashboard in headless Chromium (tests/tests/analytics.rs).
if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq chromium
fi

# The end-to-end tests run the real `airlock` binary as well as the library.
cargo build --workspace --bins --locked
cargo test --workspace --locked "$@"

# The API docs build without a warning: a broken link in the SDK's docs is a dead end for a
# plugin author, and one in the host's for a contributor reading it top-down.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
