"""Run configuration: one frozen dataclass, every field documented, derived values as properties."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import json
import math
from dataclasses import dataclass
from functools import cache

SIX_CLASSES = ("Neutral", "Angry", "Surprise", "Sad", "Happy", "Fear")
"""The B-GRPO paper's six classes, in its order."""

REWARDS = ("r1", "r2", "r3", "r4", "r5", "eswr", "wheel")
"""B-GRPO's r1..r5 (eq. 1-5) and, ours, the emotion-similarity rewards eswr and wheel (trainer.rewards)."""
TEACHER_REWARDS = ("r3", "r4", "r5", "eswr", "wheel")
ADVANTAGES = ("positive", "signed", "none")
BALANCES = ("none", "class-norm", "inverse-freq")
"""Class-balanced B-GRPO advantages (ours): none (eq. 6), class-norm (eq. 6 within each predicted class of the
batch), inverse-freq (eq. 6 weighted by the inverse frequency of each sample's predicted class in the batch)."""
UNLABELED_METHODS = ("dino", "b-grpo", "grpo", "pseudo-label", "fixmatch")
"""Methods with a stage 2 on the unlabelled pool."""
GRPO_METHODS = ("b-grpo", "grpo")
"""Methods rewarded with r1..r5 and trained with eq. 7-8: B-GRPO (the batch is the group) and per-input GRPO
(ours: the G labels drawn for each input are its group)."""

HEADS = ("pooled", "mean", "attention")
"""What the policy reads (--head): the entry's pooled vector (the paper) or its stored frames pooled by the policy
(ours: masked mean, or attentive pooling with a learned query per run; trainer/frames.py)."""

CHOICES: dict[str, tuple[str, ...]] = {
    "head": HEADS,
    "labels": ("six", "emobox"),
    "reward": REWARDS,
    "advantage": ADVANTAGES,
    "action": ("greedy", "sample"),
    "dino_views": ("auto", "frames", "noise"),
    "nonfinite": ("error", "drop"),
    "missing_teacher": ("error", "drop"),
    "val": ("fraction", "emobox"),
    "select": ("last", "val"),
    "balance": BALANCES,
    "fixmatch_views": ("auto", "frames", "noise"),
    "normalize": ("none", "global", "speaker"),
}
"""Enumerated TrainConfig fields and their allowed values (checked in __post_init__, offered as CLI choices)."""

HASH_EXCLUDED = ("out", "progress", "plots", "threads", "overwrite", "save_model", "save_teacher", "teacher_from",
                 "frames_memory_gb")
"""TrainConfig fields left out of the config hash and of result rows: they change where and how a run is shown
or how fast it goes, not its numbers (a --teacher-from teacher is checked to be the one the run would train).
Every other field (store, manifests and experiment included) is hashed."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a `trainer run` needs; written in full beside every result."""

    method: str = "b-grpo"
    """One of the registry's methods: baseline, same-epochs, full-labeled, dino, b-grpo, grpo, reference,
    pseudo-label, fixmatch, teacher."""
    store: str = ""
    """Feature store URL (local path or fsspec URL)."""
    model: str = ""
    """Encoder whose pooled features feed the policy; '' = the store's only entry for --dataset (with several, an
    error lists them)."""
    dataset: str = ""
    """Dataset (EmoBox name) the policy is trained and tested on."""
    manifests: str = ""
    """EmoBox data folder: <manifests>/<dataset>/fold_<k>/... and <dataset>/label_map.json."""
    fold: str = "all"
    """'all' or one fold number."""
    seeds: tuple[int, ...] = (0,)
    """Seeds; each seed changes the labelled/unlabelled split, the initialisation and the batch order."""
    labels: str = "six"
    """'six' (paper's six classes, others dropped and counted) or 'emobox' (the dataset's label map)."""
    out: str = "results"
    """Output folder; each run writes a sub-folder."""
    unlabeled_from: str = ""
    """Dataset whose utterances (all of them, labels ignored) feed the unsupervised stage; '' = same corpus."""
    experiment: str = ""
    """Free tag copied into every row (pipelines set it to the spec name, e.g. 'table1')."""

    hidden: int = 128
    """Hidden width of the two-layer policy MLP."""
    lr: float = 1e-4
    """Adam learning rate (both stages)."""
    batch_size: int = 32
    """Batch size; in B-GRPO the batch is the group."""
    weight_decay: float = 0.0
    """Adam L2 weight decay."""
    epochs_baseline: int = 100
    """Supervised epochs of the first stage (baseline); same-epochs/full-labeled train for the sum of both."""
    epochs_stage2: int = 100
    """Epochs of the unsupervised stage (DINO or B-GRPO)."""
    labeled_fraction: float = 0.5
    """Share of each fold's training set used with labels (stratified); the rest is the unlabelled pool.
    At 1.0 (paper's Table 4) the unsupervised stage reuses the whole training set without labels."""

    reward: str = "r1"
    """B-GRPO reward, r1..r5 (eq. 1-5), or (ours) eswr / wheel, teacher rewards weighted by emotion similarity."""
    teacher: str = ""
    """Encoder whose features train the teacher MLP (needed by r3, r4, r5)."""
    advantage: str = "positive"
    """Eq. 6 'positive' (A>0 only), 'signed' (plain batch-normalised A), 'none' (raw reward), Table 3."""
    delta: float = 0.5
    """Confidence threshold of r1 (eq. 1) and r4 (eq. 4)."""
    reward_value: float = 1.0
    """The constant C > 0 of eq. 1, 3, 4, 5."""
    theta: float = 0.5
    """KL threshold of r5 (eq. 5)."""
    epsilon: float = 0.2
    """Clip range of the ratio pi/pi_old (eq. 7)."""
    beta: float = 0.04
    """Weight of the k3 KL to the reference policy (eq. 7-8)."""
    mu: int = 1
    """Policy updates per batch against the same pi_old (GRPO's mu); with 1 the ratio is 1 at each step."""
    action: str = "greedy"
    """Action o_i: 'greedy' (argmax of pi_old) or 'sample' (drawn from pi_old)."""
    penalty_value: float = 0.0
    """Reward of a sample whose r1/r3/r4/r5 condition fails; 0 = eq. 1-5 (the paper also tried C = 2, P = -1).
    Eq. 6 normalises rewards per group, so with advantage positive/signed C and P change nothing but the 1e-4."""
    balance: str = "none"
    """Ours: class-balanced advantage. 'none' (eq. 6), 'class-norm' (normalise rewards within each predicted
    class of the batch), 'inverse-freq' (weight A_i by the inverse frequency of its predicted class in the batch)."""
    sup_weight: float = 0.0
    """Ours: weight W of a cross-entropy term on the run's labelled rows in stage 2 (b-grpo, grpo), a labelled
    batch drawn beside each unlabelled batch; 0 = the paper's unsupervised stage 2."""
    eswr_alpha: float = 0.5
    """eswr (ours): weight alpha of a near miss, r = alpha * S[answer, teacher class] when S > gamma."""
    eswr_gamma: float = 0.5
    """eswr (ours): similarity threshold gamma; the default pays only the wheel's neighbours (S = 0.854), not
    classes 90 degrees apart or neutral (S = 0.5)."""
    similarity: str = ""
    """JSON file extending the emotion wheel (trainer.emotion_space: angles, aliases, neutral); '' = the built-in
    Plutchik placement. Used by eswr, wheel and the wheel metric. The path is hashed, not the file's content: give
    an edited file a new name."""
    group_size: int = 8
    """grpo (ours): G, the labels drawn from pi_old per input; eq. 6 normalises each input's G rewards (b-grpo
    ignores it: its group is the batch)."""

    dino_views: str = "auto"
    """DINO views: 'frames' (random frame crops), 'noise' (noise + feature dropout on pooled), 'auto'."""
    dino_noise: float = 0.1
    """Gaussian noise std, in units of each feature's std, for pooled-vector views."""
    dino_dropout: float = 0.1
    """Feature dropout probability for pooled-vector views."""
    dino_crops: int = 4
    """Frame-crop views precomputed per utterance (each a mean over a random 50-100 % window)."""
    dino_momentum: float = 0.996
    """EMA momentum at the start; a cosine schedule raises it to 1 by the end."""
    dino_student_temp: float = 0.1
    """Student softmax temperature."""
    dino_teacher_temp: float = 0.07
    """Teacher temperature after the warm-up."""
    dino_warmup_teacher_temp: float = 0.04
    """Teacher temperature at the start of the warm-up."""
    dino_warmup_frac: float = 0.3
    """Fraction of the DINO epochs over which the teacher temperature rises linearly."""
    dino_center_momentum: float = 0.9
    """EMA momentum of the teacher-output center."""

    pseudo_threshold: float = 0.95
    """pseudo-label: a pool sample joins the loss when its max class probability is at least this (ours: Lee
    2013 uses every sample; the threshold is FixMatch's value)."""
    pseudo_weight: float = 3.0
    """pseudo-label: alpha_f, the final weight of the pseudo-label term (Lee 2013, eq. 16: 3)."""
    pseudo_rampup: float = 0.5
    """pseudo-label: share of the stage-2 epochs over which alpha(t) rises linearly from 0 to alpha_f (Lee 2013,
    eq. 16, ramps from epoch T1 to T2; here T1 is the start of stage 2, the baseline being the warm-up; ours)."""
    fixmatch_threshold: float = 0.95
    """FixMatch: confidence threshold tau of the weak-view pseudo-label (Sohn et al. 2020: 0.95)."""
    fixmatch_lambda_u: float = 1.0
    """FixMatch: weight lambda_u of the unlabelled term (Sohn et al. 2020: 1)."""
    fixmatch_views: str = "auto"
    """FixMatch strong view: 'frames' (a random frame-crop mean, then noise + dropout), 'noise' (noise + dropout on
    the pooled vector), 'auto' (frames where frames and pooled features share a space)."""
    fixmatch_weak_noise: float = 0.05
    """FixMatch weak view: Gaussian noise std in units of each feature's pool std (ours)."""
    fixmatch_strong_noise: float = 0.2
    """FixMatch strong view: Gaussian noise std in units of each feature's pool std (ours)."""
    fixmatch_strong_dropout: float = 0.2
    """FixMatch strong view: feature dropout probability (ours)."""

    val_fraction: float = 0.0
    """Share of each run's labelled rows held out (stratified, seeded like the split) as a validation split for
    --select val; 0 = none (the paper's protocol). Ours: the paper has no validation split."""
    val: str = "fraction"
    """Where validation rows come from: 'fraction' (--val-fraction of the labelled rows) or 'emobox' (the fold's
    EmoBox valid manifest, where EmoBox ships one)."""
    select: str = "last"
    """Reported epoch per run and stage: 'last' (the paper's protocol) or 'val' (best validation macro-F1,
    ties to the later epoch; needs a validation split). Test data never chooses."""
    diag_pool_rows: int = 1024
    """Pool rows per run (a seeded subsample) on which the per-epoch collapse diagnostics run; 0 = all."""
    reference_lr: float = 1e-3
    """`reference` method: Adam learning rate of the policy MLP trained to convergence (ours)."""
    reference_max_epochs: int = 2000
    """`reference` method: most epochs of the policy MLP; training stops earlier on the validation split."""
    reference_patience: int = 50
    """`reference` method: epochs without a better validation macro-F1 before the MLP stops."""
    reference_val_fraction: float = 0.2
    """`reference` method: validation share carved from the labelled rows when --val-fraction is 0."""

    nonfinite: str = "error"
    """Rows with NaN/inf features: 'error' (default) or 'drop' (dropped and counted in n_dropped)."""
    missing_teacher: str = "error"
    """Utterances the teacher entry lacks: 'error' (default) or 'drop' (dropped and counted)."""
    threads: int = 0
    """torch CPU threads; 0 = every core this process may use. Use 1 on a machine shared with other jobs
    (threads waiting on a busy core stall every step); pipeline cells on dask workers use 1."""
    eval_every: int = 1
    """Epochs between test evaluations for the curves (the final epoch is always evaluated)."""
    standardize: bool = False
    """Z-score each feature per run with the mean/std of that run's training rows (labelled and unlabelled, no
    labels used; the teacher with its own features'). Off in the paper's protocol; the demo turns it on."""
    plots: bool = True
    """Write PNG curves and confusion matrices beside the results."""
    progress: bool = True
    """Rich progress bar (shown only on a terminal)."""
    save_model: bool = False
    """Write each run's reported policy (one safetensors file per fold and seed, with its input standardisation
    and --layer weighted weights) and model/config.json beside the results; trainer.models.load_saved reads them."""

    overwrite: bool = False
    """Rewrite the run's folder when it already holds results of this exact configuration (otherwise such a
    rerun is refused before training)."""
    layer: str = "last"
    """Ours: input of the policy. 'last' (the entry's pooled vector, the paper), K (hidden_states layer K of an
    entry extracted with `emocache extract --layers`), or 'weighted' (SUPERB: softmax-normalised learnable weights
    over the stored layers, one vector per run, trained with the policy, which reads the weighted sum)."""
    normalize: str = "none"
    """Ours: feature normalisation. 'none' (the paper), 'global' (= --standardize: z-score with the run's training
    rows), 'speaker' (z-score each row with its speaker's statistics: training speakers from their rows of the
    run's training split, test speakers from their own unlabelled test rows, features only: transductive)."""
    head: str = "pooled"
    """Ours: how the policy reads an utterance. 'pooled' (the entry's pooled vector, the paper), 'mean' (its stored
    frames, masked mean over the valid frames, then the MLP) or 'attention' (its frames, attentive pooling
    softmax_t(q . x_t / sqrt(D)) with a learned query q per run, trained with the MLP). Frame heads need an entry
    extracted with frames, --layer last and no --normalize speaker; a teacher reads its frames the same way."""
    frames_memory_gb: float = 8.0
    """Most GiB the padded float16 frame tensor (N x T_max x D per entry) of a frame --head may take; above it the
    run stops before reading any frame, naming the size it needs (raise this where the memory is there)."""
    speaker_pattern: str = ""
    """Regex with a (?P<speaker>...) group matching the whole key, for --normalize speaker on a dataset that has
    no emocache rule and no 'speaker' manifest field ('' = the field or the emocache.speakers rule)."""

    regularize: str = ""
    """Ours (RRPO, Sec. 2.2): the teacher's regularisers, comma-separated from ls (label smoothing, eq. 2), eam
    (energy-adaptive mixup of the teacher's frames, Algorithm 1 / eq. 3; needs an entry pooled by mean of its
    frames), adv (FGM on the teacher's input embedding, eq. 4-5); '' = the paper's plain cross-entropy teacher."""
    ls_epsilon: float = 0.1
    """eps of label smoothing (RRPO eq. 2; RRPO's value 0.1), with --regularize ls."""
    eam_snr_min: float = 0.0
    """Lowest mix ratio r in dB of EAM (RRPO Algorithm 1 line 16; ours: RRPO gives no range), with --regularize eam."""
    eam_snr_max: float = 10.0
    """Highest mix ratio r in dB of EAM (ours: RRPO gives no range; 0-10 dB scales the partner's segment by
    10^(-r/20), i.e. 1 to 0.32), with --regularize eam."""
    adv_epsilon: float = 0.5
    """eps_adv, the L2 norm of each sample's FGM perturbation (RRPO eq. 4; RRPO's value 0.5), with --regularize adv."""
    adv_alpha: float = 0.5
    """alpha, the weight of the adversarial loss (RRPO eq. 5; RRPO's value 0.5), with --regularize adv."""
    save_teacher: str = ""
    """Folder to write each run's trained teacher into (teacher.safetensors + teacher.json), for --teacher-from."""
    teacher_from: str = ""
    """Folder of a teacher saved with --save-teacher, used instead of training it (trained once for a grid); its
    settings, runs and training rows must be this run's (checked), so the results are those of training it."""

    def __post_init__(self):
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: use one of {', '.join(allowed)}")
        for name in ("val_fraction", "reference_lr", "reference_val_fraction", "lr", "weight_decay", "delta", "reward_value", "theta", "epsilon", "beta", "labeled_fraction",
                     "dino_noise", "dino_dropout"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be a finite number")
        for name, low in (("epochs_baseline", 1), ("epochs_stage2", 0), ("batch_size", 1), ("hidden", 1), ("mu", 1),
                          ("group_size", 2),
                          ("eval_every", 1), ("dino_crops", 2), ("threads", 0), ("diag_pool_rows", 0),
                          ("reference_max_epochs", 1), ("reference_patience", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least {low}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"--lr {self.lr} / --weight-decay {self.weight_decay}: lr must be > 0, weight decay >= 0")
        if any(s < 0 for s in self.seeds):
            raise ValueError(f"--seeds {','.join(map(str, self.seeds))}: seeds must be non-negative integers")
        if not 0 < self.labeled_fraction <= 1:
            raise ValueError(f"--labeled-fraction {self.labeled_fraction}: must be in (0, 1]")
        if self.fold != "all" and not str(self.fold).isdigit():
            raise ValueError(f"--fold {self.fold!r}: 'all' or a fold number")
        if not self.seeds:
            raise ValueError("--seeds: give at least one seed")
        if not 0 <= self.val_fraction < 1 or not 0 < self.reference_val_fraction < 1:
            raise ValueError(f"--val-fraction {self.val_fraction} / --reference-val-fraction "
                             f"{self.reference_val_fraction}: must be in [0, 1) / (0, 1)")
        if self.select == "val" and not self.has_val:
            raise ValueError("--select val needs a validation split: give --val-fraction F (e.g. 0.2) or --val emobox")
        if self.unlabeled_from and self.unlabeled_from == self.dataset:
            raise ValueError(f"--unlabeled-from {self.unlabeled_from} names the trained dataset itself, whose test rows "
                             "would then enter the unlabelled pool; leave --unlabeled-from empty for the same corpus")
        for name in ("penalty_value", "sup_weight", "pseudo_weight", "fixmatch_lambda_u"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be a finite number")
        for name in ("sup_weight", "pseudo_weight", "fixmatch_lambda_u", "fixmatch_weak_noise",
                     "fixmatch_strong_noise"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 0")
        for name in ("pseudo_threshold", "fixmatch_threshold", "pseudo_rampup"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be in [0, 1]")
        if not 0 <= self.fixmatch_strong_dropout < 1:
            raise ValueError(f"--fixmatch-strong-dropout {self.fixmatch_strong_dropout}: must be in [0, 1)")
        if self.penalty_value != 0 and self.reward in ("r2", "eswr", "wheel"):
            raise ValueError(f"--penalty-value applies to the rule rewards r1, r3, r4, r5; {self.reward} has no "
                             "failing condition")
        if not 0 <= self.eswr_alpha <= 1 or not 0 <= self.eswr_gamma <= 1:
            raise ValueError(f"--eswr-alpha {self.eswr_alpha} / --eswr-gamma {self.eswr_gamma}: must be in [0, 1]")
        if self.balance == "class-norm" and self.advantage == "none":
            raise ValueError("--balance class-norm normalises rewards within classes; use it with --advantage "
                             "positive or signed")
        if self.method == "grpo" and self.balance != "none":
            raise ValueError(f"--balance {self.balance}: the class balances regroup a batch by predicted class; grpo's "
                             "groups are each input's G sampled labels (use --method b-grpo)")
        if self.method == "grpo" and self.action != "greedy":
            raise ValueError("--action applies to b-grpo; grpo always draws its --group-size labels from pi_old")
        if self.is_grpo and self.needs_teacher and not self.teacher:
            raise ValueError(f"--reward {self.reward} is a teacher reward (eq. 3-5): give --teacher MODEL")
        if self.layer not in ("last", "weighted") and not str(self.layer).isdigit():
            raise ValueError(f"--layer {self.layer!r}: use last, weighted or a layer number K")
        if self.head != "pooled" and (self.layer != "last" or self.normalization == "speaker"):
            raise ValueError(f"--head {self.head} pools the last layer's stored frames; it does not combine with "
                             f"--layer {self.layer} / --normalize speaker (use --head pooled for those)")
        if not self.frames_memory_gb > 0:
            raise ValueError(f"--frames-memory-gb {self.frames_memory_gb}: must be > 0")
        if self.standardize and self.normalize == "speaker":
            raise ValueError("--standardize is --normalize global; give one of --standardize or --normalize speaker")
        self._check_teacher_options()

    def _check_teacher_options(self):
        """The teacher method and the teacher's regularisers, saving and loading."""
        from trainer.robust import REGULARIZERS

        names = [n.strip() for n in self.regularize.split(",") if n.strip()]
        bad = [n for n in names if n not in REGULARIZERS]
        if bad or len(set(names)) != len(names):
            raise ValueError(f"--regularize {self.regularize!r}: a comma-separated subset of {','.join(REGULARIZERS)}")
        if self.method == "teacher" and not self.teacher:
            raise ValueError("--method teacher trains the teacher MLP of r3-r5: give --teacher MODEL")
        if self.method == "teacher" and (self.layer != "last" or self.teacher_from):
            raise ValueError("--method teacher trains the teacher on pooled last-layer vectors: drop --layer and "
                             "--teacher-from")
        if (names or self.save_teacher or self.teacher_from) and not self.uses_teacher:
            raise ValueError("--regularize / --save-teacher / --teacher-from concern the teacher of r3-r5: use them "
                             "with --method teacher, or b-grpo/grpo with --reward r3, r4 or r5")
        if names and self.head != "pooled":
            raise ValueError(f"--regularize {self.regularize} trains a teacher on pooled vectors; use it with --head "
                             "pooled")
        if "eam" in names and self.normalize == "speaker":
            raise ValueError("--regularize eam mixes unnormalised frames; use --normalize none or global with it")
        if not (0 <= self.ls_epsilon < 1 and math.isfinite(self.eam_snr_min) and self.eam_snr_min <= self.eam_snr_max
                < math.inf and 0 <= self.adv_epsilon < math.inf and 0 <= self.adv_alpha < math.inf):
            raise ValueError(f"--ls-epsilon {self.ls_epsilon} in [0, 1); --eam-snr-min {self.eam_snr_min} <= "
                             f"--eam-snr-max {self.eam_snr_max} (finite dB); --adv-epsilon {self.adv_epsilon} and "
                             f"--adv-alpha {self.adv_alpha} finite and >= 0")

    @property
    def regularizers(self) -> tuple[str, ...]:
        """--regularize in its canonical order (ls, eam, adv); () for the plain teacher."""
        from trainer.robust import REGULARIZERS

        names = {n.strip() for n in self.regularize.split(",")}
        return tuple(n for n in REGULARIZERS if n in names)

    @property
    def normalization(self) -> str:
        """The normalisation in effect: --normalize, with --standardize meaning 'global'."""
        return "global" if self.standardize else self.normalize

    @property
    def is_grpo(self) -> bool:
        """Whether the method is rewarded with r1..r5 and trained with eq. 7-8 (b-grpo, grpo)."""
        return self.method in GRPO_METHODS

    @property
    def uses_teacher(self) -> bool:
        """Whether the run trains a teacher MLP (the teacher method, or a GRPO method with a teacher reward)."""
        return self.method == "teacher" or (self.is_grpo and self.needs_teacher)

    @property
    def needs_teacher(self) -> bool:
        """Whether the reward compares with a teacher (r3, r4, r5)."""
        return self.reward in TEACHER_REWARDS

    @property
    def has_val(self) -> bool:
        """Whether runs hold out validation rows (asked for, or the reference method's own)."""
        return self.val == "emobox" or self.val_fraction > 0 or self.method == "reference"

    @property
    def val_rows_fraction(self) -> float:
        """Share of the labelled rows carved out for validation (0 with --val emobox or no validation)."""
        if self.val == "emobox":
            return 0.0
        return self.val_fraction or (self.reference_val_fraction if self.method == "reference" else 0.0)

    @property
    def selects_val(self) -> bool:
        """Whether rows report the best-validation epoch (--select val, and always for the reference MLP)."""
        return self.select == "val" or self.method == "reference"

    @property
    def uses_unlabeled(self) -> bool:
        """Whether the method has a stage 2 on the unlabelled pool."""
        return self.method in UNLABELED_METHODS

    @property
    def views(self) -> str:
        """The view setting of a method with augmented views ('auto', 'frames', 'noise'; '' for the others)."""
        return {"dino": self.dino_views, "fixmatch": self.fixmatch_views}.get(self.method, "")

    @property
    def epochs_total(self) -> int:
        """Epochs of the whole run (both stages)."""
        return self.epochs_baseline + self.epochs_stage2

    @property
    def unlabeled_dataset(self) -> str:
        """The dataset feeding the unsupervised stage."""
        return self.unlabeled_from or self.dataset

    def settings(self) -> dict:
        """Every field that can change a number or a row of the results (all but HASH_EXCLUDED), as JSON values.
        --normalize global is spelt as --standardize (the same run), so the two hash alike."""
        d = {k: v for k, v in self.to_dict().items() if k not in HASH_EXCLUDED}
        if self.normalization == "global":
            d.update(standardize=True, normalize="none")
        return d

    @property
    def config_hash(self) -> str:
        """8 hex digits of the SHA-256 of ``settings()`` (sorted JSON): equal exactly for equal settings."""
        text = json.dumps(self.settings(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    @property
    def run_name(self) -> str:
        """Sub-folder name of this run under `out`: the readable name and the config hash."""
        return f"{self.readable_name}_{self.config_hash}"

    @property
    def readable_name(self) -> str:
        """Method, model, dataset, labels and the settings that tell runs apart at a glance."""
        parts = [self.method, self.model, self.dataset, self.labels]
        if self.is_grpo:
            parts += [self.reward, self.advantage] + ([self.teacher] if self.needs_teacher else [])
            if self.method == "grpo":
                parts.append(f"G{self.group_size}")
            if self.reward_value != 1 or self.penalty_value != 0:
                parts.append(f"C{self.reward_value:g}P{self.penalty_value:g}")
            if self.reward == "eswr" and (self.eswr_alpha, self.eswr_gamma) != (0.5, 0.5):
                parts.append(f"alpha{self.eswr_alpha:g}gamma{self.eswr_gamma:g}")
            if self.balance != "none":
                parts.append(self.balance)
            if self.sup_weight:
                parts.append(f"sup{self.sup_weight:g}")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, tag in {"pseudo-label": (("pseudo_threshold", "tau"), ("pseudo_weight", "alpha"),
                                           ("pseudo_rampup", "ramp")),
                          "fixmatch": (("fixmatch_threshold", "tau"), ("fixmatch_lambda_u", "lambda"),
                                       ("fixmatch_views", "views-"))}.get(self.method, ()):
            value = getattr(self, name)
            if value != defaults[name]:  # a non-default setting of the method gets its own folder
                parts.append(f"{tag}{value:g}" if isinstance(value, float) else f"{tag}{value}")
        if self.method == "teacher" and self.teacher != self.model:
            parts.append(self.teacher)
        if self.regularizers:
            parts.append("reg-" + "+".join(self.regularizers))
        if self.unlabeled_from:
            parts.append(f"from-{self.unlabeled_from}")
        if self.labeled_fraction != 0.5:
            parts.append(f"lab{self.labeled_fraction:g}")
        if self.fold != "all":
            parts.append(f"fold{self.fold}")
        if self.has_val and self.method != "reference":
            parts.append("val-emobox" if self.val == "emobox" else f"val{self.val_fraction:g}")
        if self.select != "last":
            parts.append(f"select-{self.select}")
        if self.layer != "last":
            parts.append(f"layer-{self.layer}")
        if self.normalization != "none":
            parts.append(f"norm-{self.normalization}")
        if self.head != "pooled":
            parts.append(f"head-{self.head}")
        return "_".join(parts)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["seeds"] = list(self.seeds)
        return d

    def replace(self, **kw) -> "TrainConfig":
        return dataclasses.replace(self, **kw)


@cache
def field_docs(cls) -> dict[str, str]:
    """The docstring under each field of dataclass ``cls`` (one line each), read from its source."""
    tree = ast.parse(inspect.getsource(cls)).body[0]
    docs, body = {}, tree.body
    for stmt, nxt in zip(body, body[1:]):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


__all__ = ["TrainConfig", "HASH_EXCLUDED", "SIX_CLASSES", "REWARDS", "ADVANTAGES", "BALANCES", "UNLABELED_METHODS",
           "GRPO_METHODS", "CHOICES",
           "field_docs"]
