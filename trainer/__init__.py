"""trainer: the B-GRPO paper's experiments (baseline, DINO, B-GRPO) on features cached by emocache."""

__version__ = "0.1.0"
