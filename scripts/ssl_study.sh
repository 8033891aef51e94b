#!/usr/bin/env bash
# Build the inputs of pipelines/ssl_study.toml, run it, and render its tables (docs/STUDY.md).
# Usage: scripts/ssl_study.sh URDU_AUDIO [WORK]
#   URDU_AUDIO: folder of the URDU clips (the manifest's downloads/urdu prefix is mapped onto it)
#   WORK: where the stores, demo corpus and results go (default study/)
#   env: EMOBOX=/path/to/emobox (default /work/shared/emobox)  THREADS=1  SCHEDULER=  (e.g. local:2)
#        SEEDS=  (e.g. 0,1,2 to override the spec's 5 seeds)
set -euo pipefail
URDU_AUDIO=${1:?usage: scripts/ssl_study.sh URDU_AUDIO [WORK]}
WORK=${2:-study}
source "$(dirname "$0")/study_inputs.sh" "$URDU_AUDIO" "$WORK" fbank-stats
export STUDY_OUT=$WORK/results
run_pipeline pipelines/ssl_study.toml
for d in "$STUDY_OUT"/*/*/; do
  trainer table "$d" --compare same-epochs --out "$d/table.md"
done
