#!/usr/bin/env bash
# Stabilised B-GRPO variants and the classic semi-supervised baselines against same-epochs on the real URDU clips.
# Usage: scripts/urdu_methods.sh [STORE] [OUT]   (needs EmoBox manifests + the URDU audio)
#   EMOBOX=/path/to/emobox  URDU_AUDIO=/path/to/urdu  THREADS=1  SEEDS=0,1,2,3,4,5,6,7,8,9
set -euo pipefail
source "$(dirname "$0")/urdu_env.sh" methods "$@"
SEEDS=${SEEDS:-0,1,2,3,4,5,6,7,8,9}
for m in fbank-stats egemaps; do
  common=(--store "$STORE" --manifests "$EMOBOX" --dataset urdu --model "$m" --labels six --standardize
          --seeds "$SEEDS" --threads "$THREADS" --no-progress --out "$OUT/$m")
  trainer run baseline "${common[@]}"
  trainer run same-epochs "${common[@]}"
  trainer run b-grpo "${common[@]}"
  for variant in "--sup-weight 1" "--balance class-norm" "--balance inverse-freq" "--sup-weight 1 --balance class-norm" \
                 "--sup-weight 1 --balance inverse-freq" "--reward-value 2 --penalty-value -1" "--advantage none" \
                 "--advantage none --reward-value 2 --penalty-value -1"; do
    # shellcheck disable=SC2086
    trainer run b-grpo "${common[@]}" $variant
  done
  trainer run pseudo-label "${common[@]}"
  trainer run fixmatch "${common[@]}"
  trainer table "$OUT/$m" --layout generic --compare same-epochs --out "$OUT/$m/table.md"
done
