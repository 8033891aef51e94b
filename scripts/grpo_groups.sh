#!/usr/bin/env bash
# Build the inputs of pipelines/grpo_groups.toml, run it, and render its tables (docs/STUDY.md).
# Usage: scripts/grpo_groups.sh URDU_AUDIO [WORK]
#   URDU_AUDIO: folder of the URDU clips; WORK: stores, demo corpus and results (default study/)
#   env: EMOBOX=/path/to/emobox (default /work/shared/emobox)  THREADS=1  SCHEDULER=  SEEDS=
set -euo pipefail
URDU_AUDIO=${1:?usage: scripts/grpo_groups.sh URDU_AUDIO [WORK]}
WORK=${2:-study}
source "$(dirname "$0")/study_inputs.sh" "$URDU_AUDIO" "$WORK" fbank-stats egemaps
export GROUPS_OUT=$WORK/grpo-groups
run_pipeline pipelines/grpo_groups.toml
for d in "$GROUPS_OUT"/*/; do
  trainer table "$d" --compare baseline --out "$d/table.md"
done
