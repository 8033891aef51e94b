#!/usr/bin/env bash
# Build the inputs of pipelines/robust_teachers.toml, run it, and summarise it (docs/STUDY.md).
# Usage: scripts/robust_teachers.sh URDU_AUDIO [WORK]
#   URDU_AUDIO: folder of the URDU clips; WORK: stores, demo corpus and results (default study/)
#   env: EMOBOX=/path/to/emobox (default /work/shared/emobox)  THREADS=1  SCHEDULER=  SEEDS=
set -euo pipefail
URDU_AUDIO=${1:?usage: scripts/robust_teachers.sh URDU_AUDIO [WORK]}
WORK=${2:-study}
source "$(dirname "$0")/study_inputs.sh" "$URDU_AUDIO" "$WORK" fbank-stats egemaps
export ROBUST_OUT=$WORK/robust-teachers
run_pipeline pipelines/robust_teachers.toml
python "$(dirname "$0")/robust_summary.py" "$ROBUST_OUT"
