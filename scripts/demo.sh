#!/usr/bin/env bash
# The main job on a fresh machine: builds intercom and runs its offline local demo on
# 127.0.0.1 (no internet). Installs the system packages it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
intercom_setup
cargo build --release --locked --bin intercom
# Where cargo put it: CARGO_TARGET_DIR when the environment sets one.
exec "${CARGO_TARGET_DIR:-target}/release/intercom" demo "$@"
