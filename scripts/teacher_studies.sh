#!/usr/bin/env bash
# Build the inputs of the teacher-reward studies (docs/STUDY.md), run them and render their tables:
#   grpo_groups      pipelines/grpo_groups.toml: batch vs per-input group, r3 / eswr / wheel rewards
#   robust_teachers  pipelines/robust_teachers.toml: RRPO's teacher regularisers under b-grpo r3 and grpo eswr
# Usage: scripts/teacher_studies.sh URDU_AUDIO [WORK] [grpo_groups|robust_teachers|all]
#   URDU_AUDIO: folder of the URDU clips; WORK: stores, demo corpus and results (default study/)
#   env: EMOBOX=/path/to/emobox (default /work/shared/emobox)  THREADS=1  SCHEDULER=  SEEDS=
set -euo pipefail
URDU_AUDIO=${1:?usage: scripts/teacher_studies.sh URDU_AUDIO [WORK] [grpo_groups|robust_teachers|all]}
WORK=${2:-study}
WHICH=${3:-all}
source "$(dirname "$0")/study_inputs.sh" "$URDU_AUDIO" "$WORK" fbank-stats egemaps
export GROUPS_OUT=$WORK/grpo-groups ROBUST_OUT=$WORK/robust-teachers
if [ "$WHICH" = all ] || [ "$WHICH" = grpo_groups ]; then
  run_pipeline pipelines/grpo_groups.toml
  for d in "$GROUPS_OUT"/*/; do
    trainer table "$d" --compare baseline --out "$d/table.md"
  done
fi
if [ "$WHICH" = all ] || [ "$WHICH" = robust_teachers ]; then
  run_pipeline pipelines/robust_teachers.toml
  python "$(dirname "$0")/robust_summary.py" "$ROBUST_OUT"
fi
