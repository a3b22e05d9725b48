#!/usr/bin/env bash
# Builds the fuzz targets of tests/fuzz with libFuzzer's coverage instrumentation on the
# stable toolchain and runs each one for a while on its seed corpus.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      default: 20 s each, every target
#
# The build is what `cargo fuzz build --sanitizer none` makes, without cargo-fuzz or a
# nightly compiler: sanitizer-coverage passes and `--cfg fuzzing` through RUSTFLAGS, for
# the target triple only (so build scripts and proc macros stay uninstrumented), into
# $CARGO_TARGET_DIR/<triple>/release, apart from the normal builds. No AddressSanitizer:
# the fuzzed code is safe Rust (libsodium underneath is not instrumented either).
#
# The seed corpus in tests/fuzz/corpus/<target>/ (tests/fuzz/make_corpus.py) is only
# read; what the run discovers goes to a scratch directory, kept when the run fails. A
# crash, panic, leak, timeout or out-of-memory fails the script and leaves the input that
# caused it under $FUZZ_OUT/<target>/artifacts/ (replay: the binary with that file).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-20}"
shift || true
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME:-/tmp}/.cache/intercom-target}"
triple="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$CARGO_TARGET_DIR/$triple/release"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' tests/fuzz/Cargo.toml | grep -v '^intercom-fuzz$')
fi

echo "== fuzz targets: instrumented build"
build_start=$(date +%s)
RUSTFLAGS="-Cpasses=sancov-module \
  -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
  -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares \
  --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
  cargo build --manifest-path tests/fuzz/Cargo.toml --locked --release --bins --target "$triple"
echo "   built in $(($(date +%s) - build_start)) s"

out="${FUZZ_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/intercom-fuzz.XXXXXX")}"
failed=()
for t in "${targets[@]}"; do
  seeds="tests/fuzz/corpus/$t"
  [ -d "$seeds" ] || { echo "no seed corpus $seeds" >&2; exit 1; }
  mkdir -p "$out/$t/new" "$out/$t/artifacts"
  start=$(date +%s)
  # -timeout: one input taking longer than that is a failure too; -rss_limit_mb: the
  # same for memory. New inputs go to the first directory; the seeds are read only.
  if "$bin_dir/$t" -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/$t/artifacts/" \
    "$out/$t/new" "$seeds" >"$out/$t/log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$t/log")
    cov=$(grep -o 'cov: [0-9]*' "$out/$t/log" | tail -1)
    echo "   $t: ok, ${runs:-?} runs, ${cov:-cov ?} in $(($(date +%s) - start)) s"
  else
    echo "   $t: FAILED after $(($(date +%s) - start)) s; log $out/$t/log, input in $out/$t/artifacts/" >&2
    tail -40 "$out/$t/log" >&2
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz targets failed: ${failed[*]} (outputs kept in $out)" >&2
  exit 1
fi
[ -n "${FUZZ_OUT:-}" ] || rm -rf "$out"
