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
export EMOBOX=${EMOBOX:-/work/shared/emobox}
export URDU_STORE=$WORK/urdu.zarr DEMO_ROOT=$WORK/demo-corpus STUDY_OUT=$WORK/results
export DEMO_STORE=$DEMO_ROOT/store.zarr
EMOBOX=$EMOBOX "$(dirname "$0")/urdu_stores.sh" "$URDU_STORE" "$URDU_AUDIO"
# the demo corpus and its fbank-stats store exactly as `emocache demo` builds them (trainer/demo.py)
python - "$DEMO_ROOT" <<'PY'
import sys
from pathlib import Path
from emocache.demo import make_corpus
from emocache.extract import ExtractConfig, extract
root = Path(sys.argv[1])
if not (root / "demo" / "demo.jsonl").exists():
    make_corpus(root, per_class=16)
report = extract(ExtractConfig(model="fbank-stats", manifests=(str(root / "demo"),), store=str(root / "store.zarr"),
                               audio_root=(f"demo={root / 'demo'}",), block_size=64), progress=False)
sys.exit(0 if report.ok else f"demo extraction failed: {report.errors}")
PY
args=(--set "threads=${THREADS:-1}")
[ -n "${SEEDS:-}" ] && args+=(--set "seeds=$SEEDS")
[ -n "${SCHEDULER:-}" ] && args+=(--scheduler "$SCHEDULER")
start=$(date +%s)
trainer pipeline pipelines/ssl_study.toml "${args[@]}"
echo "study wall time: $(( $(date +%s) - start )) s"
for d in "$STUDY_OUT"/*/*/; do
  trainer table "$d" --compare same-epochs --out "$d/table.md"
done
