#!/usr/bin/env bash
# Build `emocache demo`'s synthetic corpus in DEMO_ROOT (as trainer/demo.py does) and extract MODELS into
# DEMO_ROOT/store.zarr, skipping what is already there.
# Usage: scripts/demo_stores.sh DEMO_ROOT [MODEL...]   (default models: fbank-stats egemaps)
set -euo pipefail
DEMO_ROOT=${1:?usage: scripts/demo_stores.sh DEMO_ROOT [MODEL...]}
shift
models=("$@")
[ ${#models[@]} -eq 0 ] && models=(fbank-stats egemaps)
python - "$DEMO_ROOT" "${models[@]}" <<'PY'
import sys
from pathlib import Path
from emocache.demo import make_corpus
from emocache.extract import ExtractConfig, extract
from emocache.store import open_store
root = Path(sys.argv[1])
if not (root / "demo" / "demo.jsonl").exists():
    make_corpus(root, per_class=16)
store = root / "store.zarr"
for model in sys.argv[2:]:
    if store.exists() and any(m == model for m, _ in open_store(store).entries()):
        continue
    report = extract(ExtractConfig(model=model, manifests=(str(root / "demo"),), store=str(store),
                                   audio_root=(f"demo={root / 'demo'}",), block_size=64), progress=False)
    if not report.ok:
        sys.exit(f"demo {model} extraction failed: {report.errors}")
PY
