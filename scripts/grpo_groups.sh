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
# the demo corpus as `emocache demo` builds it, with fbank-stats (the policy) and egemaps (the teacher)
python - "$DEMO_ROOT" <<'PY'
import sys
from pathlib import Path
from emocache.demo import make_corpus
from emocache.extract import ExtractConfig, extract
from emocache.store import open_store
root = Path(sys.argv[1])
if not (root / "demo" / "demo.jsonl").exists():
    make_corpus(root, per_class=16)
store = root / "store.zarr"
for model in ("fbank-stats", "egemaps"):
    if store.exists() and any(m == model for m, _ in open_store(store).entries()):
        continue
    report = extract(ExtractConfig(model=model, manifests=(str(root / "demo"),), store=str(store),
                                   audio_root=(f"demo={root / 'demo'}",), block_size=64), progress=False)
    if not report.ok:
        sys.exit(f"demo {model} extraction failed: {report.errors}")
PY
args=(--set "threads=${THREADS:-1}")
[ -n "${SEEDS:-}" ] && args+=(--set "seeds=$SEEDS")
[ -n "${SCHEDULER:-}" ] && args+=(--scheduler "$SCHEDULER")
start=$(date +%s)
trainer pipeline pipelines/grpo_groups.toml "${args[@]}"
echo "study wall time: $(( $(date +%s) - start )) s"
for d in "$GROUPS_OUT"/*/; do
  trainer table "$d" --compare baseline --out "$d/table.md"
done
