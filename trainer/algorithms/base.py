"""What every method module builds on: options as frozen dataclasses, the :class:`Method` interface, the registry
(a plain dict name -> class) and the option groups several methods share.

A method is one module of ``trainer/algorithms/``: its options (a frozen dataclass, a docstring under each field,
its checks in the field metadata), one :class:`Method` subclass decorated with :func:`register`, and its losses and
training loop. `trainer.config` imports every module of the package, so nothing outside the module names the
method (docs/TRAINER.md, "Adding a method"). Options are read and set by their flat names (``reward``,
``fixmatch_threshold``): the CLI flags, pipeline keys, result columns and config hash use them, so a name means one
thing in every method that has it (:func:`register` checks this).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
from dataclasses import dataclass
from functools import cache
from typing import ClassVar

FLAT_FIELDS = (
    "method", "store", "model", "dataset", "manifests", "fold", "seeds", "labels", "out", "unlabeled_from",
    "experiment", "hidden", "lr", "batch_size", "weight_decay", "epochs_baseline", "epochs_stage2",
    "labeled_fraction", "reward", "teacher", "advantage", "delta", "reward_value", "theta", "epsilon", "beta", "mu",
    "action", "penalty_value", "balance", "sup_weight", "eswr_alpha", "eswr_gamma", "similarity", "group_size",
    "dino_views", "dino_noise", "dino_dropout", "dino_crops", "dino_momentum", "dino_student_temp",
    "dino_teacher_temp", "dino_warmup_teacher_temp", "dino_warmup_frac", "dino_center_momentum", "pseudo_threshold",
    "pseudo_weight", "pseudo_rampup", "fixmatch_threshold", "fixmatch_lambda_u", "fixmatch_views",
    "fixmatch_weak_noise", "fixmatch_strong_noise", "fixmatch_strong_dropout", "val_fraction", "val", "select",
    "diag_pool_rows", "reference_lr", "reference_max_epochs", "reference_patience", "reference_val_fraction",
    "nonfinite", "missing_teacher", "threads", "eval_every", "standardize", "plots", "progress", "save_model",
    "overwrite", "layer", "normalize", "head", "frames_memory_gb", "speaker_pattern", "regularize", "ls_epsilon",
    "eam_snr_min", "eam_snr_max", "adv_epsilon", "adv_alpha", "save_teacher", "teacher_from")
"""The settings of every run's dict (results.json config, result rows, config hash), in this order: TrainConfig's
fields before the method registry (issue 24). An option its method lacks enters at its default, so the same
settings keep the config hash and results columns they had. Settings added since follow: a method's new options
always, a new shared field only when set away from its default (so adding one keeps every earlier hash)."""

LATER_SHARED = ("protocol", "converge_patience", "converge_max_epochs")
"""Hashed shared settings (TrainConfig fields) added after FLAT_FIELDS: rows and results.json carry one only when
it is set away from its default, so tables read a missing value as the default."""

NUMBER_KEYS = ("ge", "gt", "le", "lt")
"""The bounds an option may declare: >=, >, <=, <."""


def option(default, *, choices=None, hashed: bool = True, **bounds):
    """A dataclass field whose checks live in its metadata: ``choices`` (allowed values; a dict allows its keys),
    bounds ``ge`` / ``gt`` / ``le`` / ``lt``; a float field must also be finite. ``hashed=False``: left out of the
    config hash and the result rows (it changes where or how fast a run goes, not its numbers)."""
    if set(bounds) - set(NUMBER_KEYS):
        raise TypeError(f"option(): unknown bounds {sorted(set(bounds) - set(NUMBER_KEYS))}")
    meta = dict(bounds, hashed=hashed, **({"choices": choices} if choices is not None else {}))
    return dataclasses.field(default=default, metadata=meta)


def flag(name: str) -> str:
    """The command-line flag of a setting: ``labeled_fraction`` -> ``--labeled-fraction``."""
    return "--" + name.replace("_", "-")


def _bounds_text(meta: dict, integer: bool) -> str:
    """'at least 1', '>= 0', 'in [0, 1)' ... from ``meta``'s bounds."""
    lo = next(((k, meta[k]) for k in ("ge", "gt") if k in meta), None)
    hi = next(((k, meta[k]) for k in ("le", "lt") if k in meta), None)
    if lo and hi:
        return f"in {'[' if lo[0] == 'ge' else '('}{lo[1]:g}, {hi[1]:g}{']' if hi[0] == 'le' else ')'}"
    if lo:
        return f"at least {lo[1]:g}" if lo[0] == "ge" and integer else f"{'>=' if lo[0] == 'ge' else '>'} {lo[1]:g}"
    return f"{'<=' if hi[0] == 'le' else '<'} {hi[1]:g}"


def check_fields(obj) -> None:
    """Every field of dataclass ``obj`` against its metadata (:func:`option`); the first bad value is a ValueError
    naming its flag and what is allowed."""
    for f in dataclasses.fields(obj):
        v, meta = getattr(obj, f.name), f.metadata
        if "choices" in meta and v not in meta["choices"]:
            raise ValueError(f"{flag(f.name)} {v!r}: use one of {', '.join(meta['choices'])}")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{flag(f.name)} {v}: must be a finite number")
        ok = {"ge": lambda b: v >= b, "gt": lambda b: v > b, "le": lambda b: v <= b, "lt": lambda b: v < b}
        if any(not ok[k](meta[k]) for k in NUMBER_KEYS if k in meta):
            raise ValueError(f"{flag(f.name)} {v}: must be {_bounds_text(meta, isinstance(v, int))}")


@cache
def field_docs(cls) -> dict[str, str]:
    """The docstring under each field of dataclass ``cls`` and of the dataclasses it is built from (one line each),
    read from their source."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        body = ast.parse(inspect.getsource(klass)).body[0].body
        for stmt, nxt in zip(body, body[1:]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


@dataclass(frozen=True)
class Options:
    """A method's own settings: a frozen dataclass with a docstring under each field and its checks in the field
    metadata (:func:`option`). Groups that several methods share are classes the method's options inherit from,
    each extending :meth:`validate` (calling ``super()``)."""

    def validate(self, cfg) -> None:
        """Cross-checks with the other options and the shared settings ``cfg`` (the fields' own checks run first,
        :func:`check_fields`); the first problem is a ValueError naming the flag."""

    @property
    def uses_teacher(self) -> bool:
        """Whether the run trains (or loads) a teacher MLP."""
        return False

    @property
    def views(self) -> str:
        """The method's view setting ('auto', 'frames', 'noise'); '' for a method without augmented views."""
        return ""

    @property
    def needs_similarity(self) -> bool:
        """Whether training reads the emotion similarity of the classes (not only the wheel metric)."""
        return False

    def changed(self, tags: tuple[tuple[str, str], ...]) -> list[str]:
        """Run-name tags of the options in ``tags`` ((field, tag) pairs) set away from their defaults."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        out = []
        for name, tag in tags:
            value = getattr(self, name)
            if value != defaults[name]:
                out.append(f"{tag}{value:g}" if isinstance(value, float) else f"{tag}{value}")
        return out


@dataclass(frozen=True)
class PoolOptions(Options):
    """Methods with a stage 2 on the unlabelled pool."""

    unlabeled_from: str = ""
    """Other corpus feeding stage 2. All its utterances, labels ignored; '' = the same corpus."""

    def validate(self, cfg) -> None:
        if self.unlabeled_from and self.unlabeled_from == cfg.dataset:
            raise ValueError(f"--unlabeled-from {self.unlabeled_from} names the trained dataset itself, whose test "
                             "rows would then enter the unlabelled pool; leave --unlabeled-from empty for the same "
                             "corpus")
        if self.unlabeled_from and cfg.normalize == "speaker":
            raise ValueError("--normalize speaker with --unlabeled-from: the other corpus's speakers are not "
                             "normalised; use --normalize global, or leave --unlabeled-from empty")
        super().validate(cfg)

    def pool_tags(self) -> list[str]:
        return [f"from-{self.unlabeled_from}"] if self.unlabeled_from else []


@dataclass(frozen=True)
class CropOptions(Options):
    """Methods whose views can be frame crops (DINO, FixMatch)."""

    dino_crops: int = option(4, ge=2)
    """Frame-crop views per utterance and seed. Each the mean of a random 50-100 % window of its frames."""


class Method:
    """One training algorithm of `trainer run`: subclass it in its own module and decorate it with
    :func:`register`. The class docstring's first line is its summary in `trainer run --help`."""

    name: ClassVar[str] = ""
    """`trainer run NAME`, the rows' method column and the run folder's first word."""
    Options: ClassVar[type[Options]] = Options
    """Its options (a frozen dataclass); the shared settings are TrainConfig's."""
    unlabeled: ClassVar[bool] = False
    """Whether it trains a stage 2 on the unlabelled pool (each run's other training rows, or --unlabeled-from)."""
    all_labels: ClassVar[bool] = False
    """Whether its supervised stage trains on every label of the training split (not the labelled share)."""
    own_validation: ClassVar[bool] = False
    """Whether it holds out its own validation rows and always reports its best-validation epoch."""

    @classmethod
    def summary(cls) -> str:
        """The first paragraph of its docstring, on one line."""
        return " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())

    @classmethod
    def description(cls) -> str:
        """Its whole docstring, paragraphs kept."""
        return "\n\n".join(" ".join(p.split()) for p in (cls.__doc__ or "").strip().split("\n\n"))

    def validate(self, cfg) -> None:
        """Its checks of the whole configuration ``cfg`` (the options' own run first)."""

    def tags(self, cfg) -> list[str]:
        """Run-folder name parts after method, model, dataset and labels: the settings that tell its runs apart."""
        return []

    def train_rows(self, data) -> list:
        """Each run's labelled training rows (those its supervised stage trains on)."""
        return data.train_all if self.all_labels else data.labeled

    def epochs(self, cfg) -> int:
        """The 'epochs' column of its final rows."""
        return cfg.epochs_baseline + cfg.epochs_stage2

    def columns(self, cfg) -> dict:
        """The method-dependent identity columns of its rows (the same names for every method)."""
        return {"reward": "", "teacher": cfg.teacher if cfg.uses_teacher else "", "advantage": "", "balance": "",
                "sup_weight": 0.0, "penalty_value": 0.0, "unlabeled_from": cfg.unlabeled_from,
                "labeled_fraction": cfg.labeled_fraction}

    def own_val_fraction(self, cfg) -> float:
        """With ``own_validation``: the share of labelled rows it holds out when --val-fraction is 0."""
        return 0.0

    def supports_protocol(self, name: str) -> bool:
        """Whether it trains under --protocol ``name`` (trainer.protocols; every protocol by default)."""
        return True

    def default_model(self, cfg) -> str:
        """--model when left empty and implied by the method ('' = the store's only entry for the dataset)."""
        return ""

    def prepared(self, cfg, data) -> None:
        """Adjust the prepared data (trainer.prepare) before training; nothing by default."""

    def reports_teacher_agreement(self, cfg) -> bool:
        """Whether its rows carry the teacher-agreement columns (a policy rewarded by a teacher)."""
        return False

    def run(self, ctx):
        """Train on the run context (trainer.context.Context); return the model its 'final' rows report."""
        raise NotImplementedError(f"{type(self).__qualname__}.run")


class TwoStage(Method):
    """A supervised baseline on the labelled rows (reported as the stage1 rows), then a stage 2 on the pool."""

    Options = PoolOptions
    unlabeled = True

    def tags(self, cfg) -> list[str]:
        return cfg.options.pool_tags()

    def run(self, ctx):
        ctx.stage1()
        return self.stage2(ctx)

    def stage2(self, ctx):
        """Stage 2 after the baseline; return the model reported."""
        raise NotImplementedError(f"{type(self).__qualname__}.stage2")


METHODS: dict[str, type[Method]] = {}
"""`trainer run` methods: name -> class, in registration order."""


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add ``cls`` to :data:`METHODS` under ``cls.name``. Its options must be a frozen dataclass
    of :class:`Options`, and an option name another method has must have the same type and default there."""
    if not cls.name:
        raise TypeError(f"{cls.__qualname__}: set the class attribute `name` before registering it")
    known = METHODS.get(cls.name)
    if known is not None and known is not cls:
        raise ValueError(f"method name {cls.name!r} is taken by {known.__module__}.{known.__qualname__}")
    opts = cls.Options
    if not (isinstance(opts, type) and issubclass(opts, Options) and opts.__dataclass_params__.frozen):
        raise TypeError(f"{cls.__qualname__}.Options: a frozen dataclass subclassing trainer.algorithms.base.Options")
    others = option_fields()
    for f in dataclasses.fields(opts):
        if f.name in others and (others[f.name].default, others[f.name].type) != (f.default, f.type):
            raise ValueError(f"{cls.name}: option {f.name} ({f.type} = {f.default!r}) differs from the option of that "
                             f"name other methods have ({others[f.name].type} = {others[f.name].default!r}); rename it")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    """The class registered as ``name``; an unknown name lists the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}") from None


def option_fields() -> dict[str, dataclasses.Field]:
    """Every option of every registered method by its flat name."""
    return {f.name: f for m in METHODS.values() for f in dataclasses.fields(m.Options)}
