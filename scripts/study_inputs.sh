# Sourced by the study scripts: `source "$(dirname "$0")/study_inputs.sh" URDU_AUDIO WORK DEMO_MODEL...`.
# Exports EMOBOX (default /work/shared/emobox), URDU_STORE (WORK/urdu.zarr: fbank-stats + egemaps of the urdu
# manifest), DEMO_ROOT (WORK/demo-corpus: `emocache demo`'s synthetic corpus, as trainer/demo.py builds it) and
# DEMO_STORE (DEMO_ROOT/store.zarr: the DEMO_MODELs of it; extraction resumes, so a rerun is cheap), and defines
# `run_pipeline SPEC`, which runs `trainer pipeline SPEC` with THREADS (1), SEEDS and SCHEDULER from the environment.
_urdu_audio=${1:?usage: source study_inputs.sh URDU_AUDIO WORK DEMO_MODEL...}
_work=$2
shift 2
export EMOBOX=${EMOBOX:-/work/shared/emobox}
export URDU_STORE=$_work/urdu.zarr DEMO_ROOT=$_work/demo-corpus
export DEMO_STORE=$DEMO_ROOT/store.zarr
EMOBOX=$EMOBOX "$(dirname "${BASH_SOURCE[0]}")/urdu_stores.sh" "$URDU_STORE" "$_urdu_audio"
python - "$DEMO_ROOT" "$@" <<'PY'
import sys
from pathlib import Path
from emocache.demo import make_corpus
from emocache.extract import ExtractConfig, extract
root = Path(sys.argv[1])
if not (root / "demo" / "demo.jsonl").exists():
    make_corpus(root, per_class=16)
for model in sys.argv[2:]:
    report = extract(ExtractConfig(model=model, manifests=(str(root / "demo"),), store=str(root / "store.zarr"),
                                   audio_root=(f"demo={root / 'demo'}",), block_size=64), progress=False)
    if not report.ok:
        sys.exit(f"demo {model} extraction failed: {report.errors}")
PY

run_pipeline() {
  local args=(--set "threads=${THREADS:-1}") start
  [ -n "${SEEDS:-}" ] && args+=(--set "seeds=$SEEDS")
  [ -n "${SCHEDULER:-}" ] && args+=(--scheduler "$SCHEDULER")
  start=$(date +%s)
  trainer pipeline "$1" "${args[@]}"
  echo "study wall time: $(( $(date +%s) - start )) s"
}
