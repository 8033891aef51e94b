"""Every random stream of a run: the run seed of each (fold, seed) pair and the named offsets of its other streams.

Each (fold, seed) pair is one run with its own generators, so a run's result does not depend on which other runs
share its stack (docs/TRAINER.md, "Seeds").
"""

RUN_SEED_STRIDE = 1000
"""Run seed = seed * RUN_SEED_STRIDE + fold k: one seed per (seed, fold) for up to 1000 folds. It draws the
run's labelled/unlabelled split, its initialisation and its batch order."""
TEACHER_SEED_OFFSET = 7
"""Run seed + this seeds the teacher MLP's initialisation and batches (r3-r5), apart from the policy's."""
VIEW_SEED_OFFSET = 99
"""Run seed + this seeds the run's own stream of random views (DINO noise/crop choice) and sampled actions."""
VAL_SEED_OFFSET = 31
"""Run seed + this draws the validation rows held out of the labelled rows (--val-fraction)."""
DIAG_SEED_OFFSET = 53
"""Run seed + this draws the pool subsample of the collapse diagnostics (--diag-pool-rows)."""
CROP_SEED_OFFSET = 17
"""Seed + this draws the seed's set of DINO / FixMatch frame crops (shared by that seed's folds)."""
LABELED_SEED_OFFSET = 71
"""Run seed + this orders the labelled batches drawn beside the unlabelled ones in stage 2 (--sup-weight,
pseudo-label, fixmatch)."""


def run_seed(seed: int, fold: int) -> int:
    """The run seed of (seed, fold k)."""
    return seed * RUN_SEED_STRIDE + fold
