#!/usr/bin/env bash
# Extract the URDU fbank-stats and egemaps entries into STORE (skipping entries it already holds).
# Usage: scripts/urdu_stores.sh STORE URDU_AUDIO   env: EMOBOX=/path/to/emobox (default /work/shared/emobox)
set -euo pipefail
STORE=${1:?usage: scripts/urdu_stores.sh STORE URDU_AUDIO}
URDU_AUDIO=${2:?usage: scripts/urdu_stores.sh STORE URDU_AUDIO}
EMOBOX=${EMOBOX:-/work/shared/emobox}
for m in fbank-stats egemaps; do
  emocache info "$STORE" 2>/dev/null | grep -q "$m" || emocache extract --model "$m" \
    --manifest "$EMOBOX/urdu/urdu.jsonl" --audio-root "downloads/urdu=$URDU_AUDIO" --store "$STORE"
done
