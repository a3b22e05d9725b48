#!/usr/bin/env bash
# Installs the system packages intercom's build, demo and tests need, when missing.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run repeatedly.
set -euo pipefail

intercom_setup() {
  local missing=() optional=()
  command -v cc >/dev/null || missing+=(gcc)
  command -v g++ >/dev/null || missing+=(g++)
  command -v make >/dev/null || missing+=(make)
  # RocksDB's bindings are generated with bindgen, which loads libclang through the
  # unversioned libclang.so / libclang-N.so names that only libclang-dev installs (clang
  # alone brings libclang.so.1, which bindgen does not look for).
  command -v clang >/dev/null || missing+=(clang)
  compgen -G '/usr/lib/llvm-*/lib/libclang.so' >/dev/null ||
    compgen -G '/usr/lib/x86_64-linux-gnu/libclang-*.so' >/dev/null || missing+=(libclang-dev)
  if [ "${1:-}" = "--tests" ]; then
    command -v node >/dev/null || missing+=(nodejs)
    command -v npm >/dev/null || missing+=(npm)
    command -v taskset >/dev/null || missing+=(util-linux)
    # The NAT simulation (tests/swarm_nat.rs) needs root, iproute2 and nftables; it skips
    # with a message without them, so failing to install them is not fatal.
    if [ "$(id -u)" -eq 0 ]; then
      command -v ip >/dev/null || optional+=(iproute2)
      command -v nft >/dev/null || optional+=(nftables)
    fi
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
      echo "need root to install: ${missing[*]}" >&2
      return 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
  if [ ${#optional[@]} -gt 0 ]; then
    echo "== installing ${optional[*]} (optional: the NAT simulation test)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${optional[@]}"; } ||
      echo "warning: could not install ${optional[*]}; the NAT simulation test will skip" >&2
  fi
}
