#!/usr/bin/env bash
# Build the inputs of pipelines/grpo_groups.toml, run it, and render its tables (docs/STUDY.md).
# Usage: scripts/grpo_groups.sh URDU_AUDIO [WORK]
#   URDU_AUDIO: folder of the URDU clips; WORK: stores, demo corpus and results (default study/)
#   env: EMOBOX=/path/to/emobox (default /work/shared/emobox)  THREADS=1  SCHEDULER=  SEEDS=
set -euo pipefail
URDU_AUDIO=${1:?usage: scripts/grpo_groups.sh URDU_AUDIO [WORK]}
WORK=${2:-study}
export EMOBOX=${EMOBOX:-/work/shared/emobox}
export URDU_STORE=$WORK/urdu.zarr DEMO_ROOT=$WORK/demo-corpus GROUPS_OUT=$WORK/grpo-groups
export DEMO_STORE=$DEMO_ROOT/store.zarr
EMOBOX=$EMOBOX "$(dirname "$0")/urdu_stores.sh" "$URDU_STORE" "$URDU_AUDIO"
"$(dirname "$0")/demo_stores.sh" "$DEMO_ROOT" fbank-stats egemaps   # policy and teacher features
args=(--set "threads=${THREADS:-1}")
[ -n "${SEEDS:-}" ] && args+=(--set "seeds=$SEEDS")
[ -n "${SCHEDULER:-}" ] && args+=(--scheduler "$SCHEDULER")
start=$(date +%s)
trainer pipeline pipelines/grpo_groups.toml "${args[@]}"
echo "study wall time: $(( $(date +%s) - start )) s"
for d in "$GROUPS_OUT"/*/; do
  trainer table "$d" --compare baseline --out "$d/table.md"
done
