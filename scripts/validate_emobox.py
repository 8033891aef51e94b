"""Read every EmoBox manifest in a folder with emocache's reader and report counts per dataset and fold.

    python scripts/validate_emobox.py ../shared/emobox [--audio-root downloads/urdu=../shared/data/urdu]

With --audio-root, also counts how many wav paths resolve to existing files.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

from emocache.manifest import (ManifestError, load_label_map, lookup_label, read_folds, read_manifest,
                               six_class_map)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--audio-root", action="append", default=[])
    args = ap.parse_args()
    six = six_class_map()
    problems = 0
    print(f"{'dataset':<9} {'whole':>6} {'folds':>5}  {'train/valid/test per fold':<44} {'labels (canonical)':<60} "
          f"{'six-class kept':>14} {'files found':>11}")
    for ds in sorted(p for p in args.root.iterdir() if p.is_dir()):
        lm = load_label_map(ds)
        whole = ds / f"{ds.name}.jsonl"
        try:
            utts = read_manifest(whole, args.audio_root, label_map=lm) if whole.exists() else []
            folds = read_folds(ds)
        except ManifestError as e:
            print(f"{ds.name:<9} ERROR {e}")
            problems += 1
            continue
        if not utts:  # no whole-dataset file (m3ed upstream): the union of fold files
            seen = {}
            for f in sorted(ds.glob("fold_*/*.jsonl")):
                for u in read_manifest(f, args.audio_root, label_map=lm):
                    seen.setdefault(u.key, u)
            utts = list(seen.values())
        canon = Counter(lookup_label(u.emo, lm) for u in utts)
        kept = sum(v for k, v in canon.items() if k in six)
        splits = "; ".join(f"{f.k}: {len(f.train)}/{len(f.valid)}/{len(f.test)}" for f in folds)
        found = sum(os.path.exists(u.wav) for u in utts) if args.audio_root else "-"
        labels = ", ".join(f"{k} {v}" for k, v in sorted(canon.items()))
        print(f"{ds.name:<9} {len(utts):>6} {len(folds):>5}  {splits:<44} {labels:<60} {kept:>14} {found!s:>11}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
