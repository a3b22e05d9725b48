#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what the tests need (Debian packages, the
# pinned JS modules), then formatting, lints, the whole test suite and a build of the
# fuzz targets. `.ci/run` calls this script.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the build and tests use. Installed only when missing.
missing=()
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v g++ >/dev/null || missing+=(g++)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

echo "== JS reference modules (tests/package-lock.json)"
npm ci --prefix tests --no-audit --no-fund --loglevel=error

echo "== cargo fmt"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== fuzz targets build"
cargo build --manifest-path tests/fuzz/Cargo.toml --locked --bins

echo "== cargo test"
cargo test --workspace --locked
