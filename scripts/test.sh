#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what the tests need (Debian packages, the
# pinned JS modules), then formatting, lints, the whole test suite and a short run of
# every fuzz target (scripts/fuzz.sh). `.ci/run` calls this script.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/setup.sh
intercom_setup --tests

# Reuse build artefacts across clones on the same machine when possible (RocksDB and
# libsodium take minutes to compile); a fresh machine simply builds them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME:-/tmp}/.cache/intercom-target}"

echo "== JS reference modules (tests/package-lock.json)"
npm ci --prefix tests --no-audit --no-fund --loglevel=error

echo "== cargo fmt"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked

# Every fuzz target, instrumented for libFuzzer on the stable toolchain, runs 20 s on its
# seed corpus (tests/fuzz/corpus); about 5 minutes with the build on 2 cores.
echo "== fuzz targets (20 s each)"
scripts/fuzz.sh "${INTERCOM_FUZZ_SECONDS:-20}"
