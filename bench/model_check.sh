#!/usr/bin/env bash
# A deeper run of the protocol model (model/, docs/model-check.md) than the
# suite's: every state within STEPS actions of the start, for the protocol
# with the fix the model suggests, with each planted bug, and for the code
# as it is. Prints states explored and time per run, and every
# counterexample's path.
#
# Usage: bench/model_check.sh [STEPS]   (default 11; the suite runs 10)
# Memory grows about threefold per step: 11 takes about 2 min and ~4 GiB,
# 12 several minutes and more memory than a small machine has.
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-11}"
VIGIL_MODEL_DEPTH="$steps" cargo test --release -p vigil-model-check \
    -- --nocapture --test-threads 1 protocol_holds_every_invariant
