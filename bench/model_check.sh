#!/usr/bin/env bash
# A deeper run of the protocol model (model/, docs/model-check.md) than the
# suite's: every state within STEPS actions of the start, for the protocol
# with the fixes the model suggests. Prints states explored and time, and
# the path of any counterexample.
#
# Usage: bench/model_check.sh [STEPS]   (default 11; the suite runs 10)
# States grow about threefold per step: 11 took 108 s and 9.9 GiB here;
# 12 needs more memory than a 23 GiB machine has.
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-11}"
VIGIL_MODEL_DEPTH="$steps" cargo test --release -p vigil-model-check \
    -- --nocapture --test-threads 1 protocol_holds_every_invariant
