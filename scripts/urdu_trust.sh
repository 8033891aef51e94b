#!/usr/bin/env bash
# Collapse diagnostics, validation selection and the converged reference on the real URDU clips.
# Usage: scripts/urdu_trust.sh [STORE] [OUT]   (needs /work/shared-style data: EmoBox manifests + URDU audio)
#   EMOBOX=/path/to/emobox  URDU_AUDIO=/path/to/urdu  THREADS=1
set -euo pipefail
source "$(dirname "$0")/urdu_env.sh" trust "$@"
for m in fbank-stats egemaps; do
  common=(--store "$STORE" --manifests "$EMOBOX" --dataset urdu --model "$m" --labels six --standardize
          --seeds 0,1,2 --threads "$THREADS" --no-progress --out "$OUT/$m")
  for method in baseline same-epochs b-grpo; do
    trainer run "$method" "${common[@]}"
    trainer run "$method" "${common[@]}" --val-fraction 0.2 --select val
  done
  trainer run reference "${common[@]}"
done
for m in fbank-stats egemaps; do
  trainer table "$OUT/$m" --compare same-epochs --out "$OUT/$m/table.md"
  trainer table "$OUT/$m" --oracle --out "$OUT/$m/table-oracle.md"
done
