#!/usr/bin/env bash
# Fuzzes Airlock's input parsers with cargo-fuzz (libFuzzer; needs a nightly toolchain):
#   host/fuzz/run.sh                  every target for 300 s each
#   host/fuzz/run.sh router 60        one target for 60 s
# Targets: config, router, template, transform (host/fuzz/src/bodies.rs says what each checks).
# New inputs go to a scratch corpus (host/fuzz/target/corpus/NAME); the checked-in seeds in
# host/fuzz/corpus/NAME are only read. A crash is written to host/fuzz/artifacts/NAME/: fix it,
# then copy the input to host/fuzz/regressions/NAME/ with a name saying what broke, so the normal
# test command (tests/tests/fuzz_corpus.rs, on stable) replays it from then on.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi

targets=(config router template transform)
[ $# -ge 1 ] && targets=("$1")
seconds="${2:-300}"
for target in "${targets[@]}"; do
    scratch="target/corpus/$target"
    mkdir -p "$scratch"
    echo "== fuzzing $target for ${seconds}s"
    cargo +nightly fuzz run "$target" "$scratch" "corpus/$target" "regressions/$target" -- \
        -max_total_time="$seconds" -timeout=10 -max_len=4096 -print_final_stats=1
done
