"""The teacher MLP of rewards r3-r5: its options (shared with the teacher-rewarded b-grpo and grpo) and, ours,
`trainer run teacher`, the teacher alone, trained exactly as b-grpo/grpo train it and tested on its own features.
Training, saving and loading it: trainer.teachers; RRPO's regularisers: trainer.robust."""

from __future__ import annotations

from dataclasses import dataclass

from trainer.algorithms.base import Method, Options, option, register
from trainer.robust import REGULARIZERS
from trainer.teachers import fit_teacher


@dataclass(frozen=True)
class TeacherOptions(Options):
    """The teacher MLP: its encoder, the rows it lacks, RRPO's regularisers (ours) and saving / reusing it."""

    teacher: str = ""
    """Teacher encoder (teacher rewards). Its features train the teacher MLP of r3, r4, r5, eswr and wheel."""
    missing_teacher: str = option("error", choices=("error", "drop"))
    """Utterances the teacher entry lacks. 'error' or 'drop' (dropped from every run and counted)."""
    regularize: str = ""
    """Teacher regularisers (ours), from ls,eam,adv. RRPO's (Sec. 2.2), comma-separated: ls (label smoothing,
    eq. 2), eam (energy-adaptive mixup of the teacher's frames, Algorithm 1; needs an entry pooled by the mean of
    its frames), adv (FGM on its input, eq. 4-5); '' = the paper's plain cross-entropy teacher."""
    ls_epsilon: float = option(0.1, ge=0, lt=1)
    """Label-smoothing eps (with ls). RRPO eq. 2 and its value."""
    eam_snr_min: float = 0.0
    """Lowest EAM mix ratio in dB (with eam). RRPO Algorithm 1 line 16; ours: RRPO gives no range."""
    eam_snr_max: float = 10.0
    """Highest EAM mix ratio in dB (with eam). Ours: RRPO gives no range; 0-10 dB scales the partner's
    segment by 10^(-r/20), i.e. 1 to 0.32."""
    adv_epsilon: float = option(0.5, ge=0)
    """FGM perturbation norm eps_adv (with adv). Per sample; RRPO eq. 4 and its value."""
    adv_alpha: float = option(0.5, ge=0)
    """Weight alpha of the adversarial loss (with adv). RRPO eq. 5 and its value."""
    save_teacher: str = option("", hashed=False)
    """Folder to save each run's teacher into. teacher.safetensors + teacher.json, for --teacher-from."""
    teacher_from: str = option("", hashed=False)
    """Folder of a saved teacher to use. Written by --save-teacher and used instead of training it (once
    for a grid); its settings, runs and training rows must be this run's (checked), so the results are those of
    training it."""

    @property
    def uses_teacher(self) -> bool:
        return True

    @property
    def regularizers(self) -> tuple[str, ...]:
        """--regularize in its canonical order (ls, eam, adv); () for the plain teacher."""
        names = {n.strip() for n in self.regularize.split(",")}
        return tuple(n for n in REGULARIZERS if n in names)

    def validate(self, cfg) -> None:
        names = [n.strip() for n in self.regularize.split(",") if n.strip()]
        if any(n not in REGULARIZERS for n in names) or len(set(names)) != len(names):
            raise ValueError(f"--regularize {self.regularize!r}: a comma-separated subset of {','.join(REGULARIZERS)}")
        if self.uses_teacher and not self.teacher:
            raise ValueError(f"`trainer run {cfg.method}` trains the teacher MLP of r3-r5: give --teacher MODEL")
        if (names or self.save_teacher or self.teacher_from) and not self.uses_teacher:
            raise ValueError("--regularize / --save-teacher / --teacher-from concern the teacher of r3-r5: use them "
                             "with `trainer run teacher`, or b-grpo/grpo with a teacher reward (r3, r4, r5, eswr, "
                             "wheel)")
        if names and cfg.head != "pooled":
            raise ValueError(f"--regularize {self.regularize} trains a teacher on pooled vectors; use it with --head "
                             "pooled")
        if any(REGULARIZERS[n].frames for n in names) and cfg.normalize == "speaker":
            raise ValueError("--regularize eam mixes unnormalised frames; use --normalize none or global with it")
        if self.eam_snr_min > self.eam_snr_max:
            raise ValueError(f"--eam-snr-min {self.eam_snr_min} > --eam-snr-max {self.eam_snr_max}: give a range")
        super().validate(cfg)

    def teacher_tags(self) -> list[str]:
        return ["reg-" + "+".join(self.regularizers)] if self.regularizers else []


@register
class Teacher(Method):
    """The teacher MLP of r3-r5 alone (ours), tested on its own features.

    Trained exactly as b-grpo/grpo train it (seeds, rows, epochs, --regularize) on --teacher's features;
    --save-teacher keeps it for --teacher-from."""

    name = "teacher"
    Options = TeacherOptions

    def validate(self, cfg) -> None:
        if cfg.layer != "last" or cfg.teacher_from:
            raise ValueError("`trainer run teacher` trains the teacher on pooled last-layer vectors: drop --layer and "
                             "--teacher-from")

    def tags(self, cfg) -> list[str]:
        return ([cfg.teacher] if cfg.teacher != cfg.model else []) + cfg.options.teacher_tags()

    def epochs(self, cfg) -> int:
        return cfg.epochs_baseline

    def supports_protocol(self, name: str) -> bool:
        return name == "paper"  # trained as b-grpo/grpo train their teacher: --epochs-baseline epochs

    def default_model(self, cfg) -> str:
        return cfg.teacher

    def prepared(self, cfg, data) -> None:
        data.X, data.Xu = data.Xt, data.Xtu  # the teacher's features are the run's inputs, its rows the policy's

    def run(self, ctx):
        ctx.teacher = fit_teacher(ctx.cfg, ctx.data, ctx.teacher_seeds(), ctx.log)
        return ctx.teacher
