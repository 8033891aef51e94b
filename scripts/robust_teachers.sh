#!/usr/bin/env bash
# Build the inputs of pipelines/robust_teachers.toml, run it, and summarise it (docs/STUDY.md).
# Usage: scripts/robust_teachers.sh URDU_AUDIO [WORK]
#   URDU_AUDIO: folder of the URDU clips; WORK: stores, demo corpus and results (default study/)
#   env: EMOBOX=/path/to/emobox (default /work/shared/emobox)  THREADS=1  SCHEDULER=  SEEDS=
set -euo pipefail
URDU_AUDIO=${1:?usage: scripts/robust_teachers.sh URDU_AUDIO [WORK]}
WORK=${2:-study}
export EMOBOX=${EMOBOX:-/work/shared/emobox}
export URDU_STORE=$WORK/urdu.zarr DEMO_ROOT=$WORK/demo-corpus ROBUST_OUT=$WORK/robust-teachers
export DEMO_STORE=$DEMO_ROOT/store.zarr
EMOBOX=$EMOBOX "$(dirname "$0")/urdu_stores.sh" "$URDU_STORE" "$URDU_AUDIO"
"$(dirname "$0")/demo_stores.sh" "$DEMO_ROOT" fbank-stats egemaps
args=(--set "threads=${THREADS:-1}")
[ -n "${SEEDS:-}" ] && args+=(--set "seeds=$SEEDS")
[ -n "${SCHEDULER:-}" ] && args+=(--scheduler "$SCHEDULER")
start=$(date +%s)
trainer pipeline pipelines/robust_teachers.toml "${args[@]}"
echo "study wall time: $(( $(date +%s) - start )) s"
python "$(dirname "$0")/robust_summary.py" "$ROBUST_OUT"
