#!/usr/bin/env bash
# Coverage-guided fuzzing of the decoders that read the network and the disk
# (docs/fuzzing.md): runs each target of fuzz/ under `cargo afl` for SECONDS
# (default 600), one at a time, and prints executions and crashes per target.
#
# Usage: bench/fuzz.sh [SECONDS] [TARGET...]
#
# Environment:
#   FUZZ_WORK=DIR          AFL output directories (default /tmp/vigil-fuzz)
#   FUZZ_UPDATE_CORPUS=1   replace fuzz/corpus/<target>/ by the minimized
#                          queue of the run (afl-cmin), to commit
#   FUZZ_NICE=N            niceness of builds and fuzzers (default 10)
#
# Exits 1 if any target saved a crash; the crashing inputs are under
# $FUZZ_WORK/<target>/default/crashes/ (replay one with
# `target/fuzz/release/<target> < FILE`, or add it to the corpus and run the
# corpus test, tests/tests/fuzz_corpus.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-600}"
shift || true
all=(nbd_handshake nbd_transmission protocol_frame protocol_handshake replica_metadata)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
work="${FUZZ_WORK:-/tmp/vigil-fuzz}"
nice_n="${FUZZ_NICE:-10}"
# Instrumented builds live apart from the normal ones.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/target/fuzz}"

# cargo-afl from crates.io; it builds AFL++ itself (needs gcc, make, clang).
if ! cargo afl --version >/dev/null 2>&1; then
  echo "== installing cargo-afl (crates.io)"
  cargo install cargo-afl --locked
fi
# AFL++ itself, built once per rustc version from the source cargo-afl ships.
afl_data="${XDG_DATA_HOME:-$HOME/.local/share}/afl.rs"
rustc_hash="$(rustc -vV | sed -n 's/^commit-hash: \(.......\).*/\1/p')"
if ! ls "$afl_data"/rustc-*-"$rustc_hash"/afl.rs-*/afl/bin/afl-fuzz >/dev/null 2>&1; then
  echo "== building AFL++ (cargo afl config --build)"
  cargo afl config --build
fi

# cargo afl's own tools first: afl-cmin runs `afl-showmap` from PATH, and
# another AFL++ (a distribution's) may not understand it.
afl_bin="$(dirname "$(ls "$afl_data"/rustc-*-"$rustc_hash"/afl.rs-*/afl/bin/afl-fuzz | head -1)")"
export PATH="$afl_bin:$PATH"

echo "== building the fuzz targets (cargo afl build --release)"
(cd fuzz && nice -n "$nice_n" cargo afl build --release)
bin="$CARGO_TARGET_DIR/release"

# One machine, shared: no CPU binding, no frequency check, no core dumps
# needed (a crash is still seen as a crash).
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1
export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SKIP_CRASHES=1

stat() { sed -n "s/^$1 *: *//p" "$2"; }

mkdir -p "$work"
failed=0
printf '\n%-20s %10s %14s %8s %7s %9s %10s\n' target seconds executions exec/s crashes "corpus" "cmin"
results=()
for t in "${targets[@]}"; do
  in="fuzz/corpus/$t"
  if [ -z "$(ls -A "$in" 2>/dev/null)" ]; then
    echo "== $t: no corpus yet; starting from the seeds"
    nice -n "$nice_n" cargo run -q -p vigil-engine --features fuzzing --example fuzz_seeds -- "$work/seeds" "$t"
    in="$work/seeds/$t"
  fi
  out="$work/$t"
  rm -rf "$out" "$work/$t.cmin"
  dict=()
  [ -f "fuzz/dict/$t.dict" ] && dict=(-x "fuzz/dict/$t.dict")
  echo "== $t: fuzzing for ${secs}s (log: $work/$t.log)"
  nice -n "$nice_n" cargo afl fuzz -i "$in" -o "$out" -V "$secs" "${dict[@]}" -- "$bin/$t" \
    >"$work/$t.log" 2>&1 || { echo "afl-fuzz failed for $t; see $work/$t.log"; tail -20 "$work/$t.log"; exit 2; }
  s="$out/default/fuzzer_stats"
  crashes=$(find "$out/default/crashes" -type f -name 'id:*' | wc -l)
  echo "== $t: minimizing the queue (afl-cmin)"
  # The shell afl-cmin: the Python one finds no coverage in these
  # persistent-mode binaries. Edges only (-e), not hit counts: the JSON
  # parser's loops would otherwise keep thousands of files.
  nice -n "$nice_n" "$afl_bin/afl-cmin.bash" -e -i "$out/default/queue" -o "$work/$t.cmin" -- "$bin/$t" \
    >"$work/$t.cmin.log" 2>&1 || true
  cmin_files=$(find "$work/$t.cmin" -type f 2>/dev/null | wc -l)
  cmin_bytes=$(du -sb "$work/$t.cmin" 2>/dev/null | cut -f1)
  cmin_kb=$(( ${cmin_bytes:-0} / 1024 ))
  if [ "${FUZZ_UPDATE_CORPUS:-0}" = 1 ] && [ "$cmin_files" -gt 0 ]; then
    rm -rf "fuzz/corpus/$t"
    mkdir -p "fuzz/corpus/$t"
    # Short, stable names (the queue's carry AFL's bookkeeping).
    i=0
    for f in $(ls "$work/$t.cmin" | sort); do
      cp "$work/$t.cmin/$f" "fuzz/corpus/$t/$(printf 'c%04d' "$i")"
      i=$((i + 1))
    done
  fi
  # The metadata target's template replica (one per fuzzer process tree).
  rm -rf /dev/shm/vigil-fuzz-metadata-* 2>/dev/null || true
  results+=("$(printf '%-20s %10s %14s %8s %7s %9s %10s' "$t" "$(stat run_time "$s")" \
    "$(stat execs_done "$s")" "$(stat execs_per_sec "$s")" "$crashes" \
    "$(stat corpus_count "$s")" "${cmin_files}/${cmin_kb}K")")
  printf '%s\n' "${results[-1]}"
  [ "$crashes" -eq 0 ] || failed=1
done

echo
echo "== summary (corpus: AFL queue entries; cmin: minimized files/bytes)"
printf '%-20s %10s %14s %8s %7s %9s %10s\n' target seconds executions exec/s crashes "corpus" "cmin"
printf '%s\n' "${results[@]}"
if [ "$failed" -ne 0 ]; then
  echo "crashes found: see $work/<target>/default/crashes/"
  exit 1
fi
