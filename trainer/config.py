"""Run configuration: the settings every method shares and the method's own options, frozen, every field
documented, derived values as properties; and the methods a configuration can name.

Methods live in ``trainer/algorithms/`` (one module each, trainer.algorithms.base): this module imports every
module of that package and the plugins of the entry-point group ``trainer.methods``, e.g. in a plugin's
pyproject.toml::

    [project.entry-points."trainer.methods"]
    my-method = "my_package.my_method"
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import pkgutil
import warnings
from dataclasses import dataclass
from importlib import metadata

import trainer.algorithms
from trainer.algorithms.base import (FLAT_FIELDS, METHODS, Method, Options, check_fields, field_docs, flag,
                                     get_method, option, option_fields)
from trainer.data import SIX_CLASSES
from trainer.devices import check_spec
from trainer.frames import HEADS
from trainer.protocols import PROTOCOLS, get_protocol

PLUGIN_GROUP = "trainer.methods"
"""Entry-point group of method plugins: each names a module whose Method classes use @register."""


def load_methods() -> list[str]:
    """Import every module of trainer.algorithms and the method plugins; returns the registered method names. A
    plugin that fails to load is a warning naming it, never a failure of the trainer."""
    for info in pkgutil.iter_modules(trainer.algorithms.__path__):
        importlib.import_module(f"{trainer.algorithms.__name__}.{info.name}")
    for ep in metadata.entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()
        except Exception as e:  # a broken plugin must not take the built-in methods down with it
            warnings.warn(f"trainer method plugin {ep.name!r} ({ep.value}) failed to load: {type(e).__name__}: {e}",
                          stacklevel=2)
    return list(METHODS)


load_methods()


@dataclass(frozen=True, init=False)
class TrainConfig:
    """Everything a `trainer run` needs, written in full beside every result: the settings every method shares
    (these fields) and the method's own ``options``. Built from flat names as the CLI and pipelines give them,
    ``TrainConfig(method="b-grpo", reward="r3", teacher="t")``, or with ``options=`` the method's Options; a
    method option reads by the same flat name (``cfg.reward``)."""

    method: str = "b-grpo"
    """A method of the registry (trainer.algorithms); `trainer run --help` lists them."""
    store: str = ""
    """Feature store (local path or fsspec URL)."""
    model: str = ""
    """Encoder feeding the policy. '' = the store's only entry for --dataset."""
    dataset: str = ""
    """Dataset (EmoBox name) trained and tested on."""
    manifests: str = ""
    """EmoBox data folder. It holds <manifests>/<dataset>/fold_<k>/... and <dataset>/label_map.json."""
    fold: str = "all"
    """'all' or one fold number."""
    seeds: tuple[int, ...] = (0,)
    """Comma-separated seeds. Each changes the labelled/unlabelled split, the initialisation and the batch order."""
    labels: str = option("six", choices=("six", "emobox"))
    """Label set. 'six' (the paper's six classes, others dropped and counted) or 'emobox' (the dataset's map)."""
    out: str = option("results", hashed=False)
    """Output folder. Each run writes a sub-folder named by its settings."""
    experiment: str = ""
    """Tag copied into every row. Pipelines set the spec's name."""

    hidden: int = option(128, ge=1)
    """Hidden width of the policy MLP. Two linear layers, ReLU between (the paper's policy)."""
    lr: float = option(1e-4, gt=0)
    """Adam learning rate."""
    batch_size: int = option(32, ge=1)
    """Batch size. In B-GRPO the batch is the group."""
    weight_decay: float = option(0.0, ge=0)
    """Adam L2 weight decay."""
    epochs_baseline: int = option(100, ge=1)
    """Epochs of stage 1 (the supervised baseline)."""
    epochs_stage2: int = option(100, ge=0)
    """Epochs of stage 2. same-epochs and full-labeled train epochs_baseline + this; one-stage methods (baseline,
    teacher, reference) ignore it."""
    labeled_fraction: float = option(0.5, gt=0, le=1)
    """Labelled share of each training fold. Stratified; the rest is the unlabelled pool (at 1, the paper's Table
    4, stage 2 reuses the whole training set without labels)."""
    similarity: str = ""
    """JSON file extending the emotion wheel. Used by the wheel metric and the eswr / wheel rewards
    (trainer.emotion_space); '' = the built-in Plutchik placement. The path is hashed, not the file's content:
    give an edited file a new name."""

    val_fraction: float = option(0.0, ge=0, lt=1)
    """Validation share of the labelled rows (ours). Held out (stratified) for --select val; 0 = none (the
    paper's protocol)."""
    val: str = option("fraction", choices=("fraction", "emobox"))
    """Source of validation rows. 'fraction' (--val-fraction of the labelled rows) or 'emobox' (the fold's EmoBox
    valid manifest)."""
    select: str = option("last", choices=("last", "val"))
    """Reported epoch of each run and stage. 'last' (the paper) or 'val' (best validation macro-F1, ties to the
    later epoch; needs validation rows). Test data never chooses."""
    diag_pool_rows: int = option(1024, ge=0)
    """Pool rows of the collapse diagnostics. A seeded subsample per run, evaluated every epoch; 0 = all."""
    nonfinite: str = option("error", choices=("error", "drop"))
    """Rows with NaN/inf features. 'error' or 'drop' (dropped and counted in n_dropped)."""
    threads: int = option(0, ge=0, hashed=False)
    """torch CPU threads (0 = all). 0 is every core this process may use; use 1 on a machine shared with other
    jobs (threads waiting on a busy core stall every step); pipeline cells on dask workers use 1."""
    device: str = option("auto", hashed=False)
    """Device (auto|cpu|cuda|cuda:I). 'auto' is cuda when torch sees a GPU, else cpu; it changes
    where a run computes, not its numbers (CPU and CUDA agree within float rounding where the method is
    deterministic: docs/TRAINER.md, "Devices"), so it is in no run name or hash."""
    eval_every: int = option(1, ge=1)
    """Epochs between curve evaluations. The final epoch is always evaluated."""
    standardize: bool = False
    """Z-score features (= --normalize global). Per run, with the mean/std of that run's training rows, labelled
    and unlabelled, no labels used (a teacher with its own features'). Off in the paper's protocol."""
    plots: bool = option(True, hashed=False)
    """Write figures beside the results. PNG and PDF curves and confusion matrices."""
    progress: bool = option(True, hashed=False)
    """Show a progress bar. Rich, only on a terminal."""
    save_model: bool = option(False, hashed=False)
    """Save each run's reported policy. One safetensors file per fold and seed with its input standardisation
    and layer weights, and model/config.json; trainer.models.load_saved reads them."""
    overwrite: bool = option(False, hashed=False)
    """Rewrite a folder of this exact configuration. Otherwise such a rerun is refused before training."""
    layer: str = "last"
    """Policy input (ours): last, K or weighted. 'last' is the entry's pooled vector (the paper), K the stored
    layer K of an entry extracted with `emocache extract --layers`, 'weighted' SUPERB's learnt softmax weights
    over the stored layers (one vector per run, trained with the policy)."""
    normalize: str = option("none", choices=("none", "global", "speaker"))
    """Feature normalisation (ours). 'none' (the paper), 'global' (= --standardize) or 'speaker' (each row with
    its speaker's statistics: training speakers from the run's training rows, test speakers from their own
    test rows; transductive, features only)."""
    head: str = option("pooled", choices=HEADS)
    """Policy head. How the policy reads an utterance: 'pooled' (the entry's pooled vector, the paper), or its stored frames
    pooled by a masked 'mean' or by 'attention' with a learned query per run (ours), or 'emobox' (EmoBox's
    classifier: utterance layer norm, first layer on every frame, masked mean; trainer.frames); frame heads need an
    entry with frames, --layer last and no --normalize speaker, and a teacher reads its frames alike."""
    frames_memory_gb: float = option(8.0, gt=0, hashed=False)
    """Max GiB of --head frames. The padded float16 tensor (N x T_max x D per entry) is checked before
    any frame is read; above it the run stops naming the size it needs."""
    speaker_pattern: str = ""
    """Speaker regex for --normalize speaker. A (?P<speaker>...) group matching the whole key, for a dataset with
    no emocache rule and no 'speaker' manifest field ('' = the field or the emocache.speakers rule)."""
    protocol: str = option("paper", choices=PROTOCOLS)
    """Protocol. 'paper' (fixed --epochs-baseline / --epochs-stage2, the paper's) or 'converged' (ours: every
    stage of every method until its validation macro-F1 stops improving, best-validation weights restored;
    validation rows from --val-fraction, 0.2 of the labelled rows when it is 0, or --val emobox)."""
    converge_patience: int = option(50, ge=1)
    """Patience, --protocol converged. Epochs without a better validation macro-F1 before a run's stage stops."""
    converge_max_epochs: int = option(1000, ge=1)
    """Max epochs, converged. The most epochs of each stage under --protocol converged."""
    options: Options = dataclasses.field(default=None, repr=True)
    """The method's own options (its Options dataclass); built from the flat names given beside the fields."""

    def __init__(self, method: str = "b-grpo", options: Options | None = None, **settings):
        cls = get_method(method)
        shared = {f.name for f in dataclasses.fields(TrainConfig)}
        mine = {f.name for f in dataclasses.fields(cls.Options)}
        given = {k: v for k, v in settings.items() if k not in shared}
        for key in given:
            if key not in mine:
                raise ValueError(f"{method} has no option {flag(key)} ({key}); its options: "
                                 f"{', '.join(sorted(mine)) or 'none beyond the shared settings'}")
        if options is None:
            options = cls.Options(**given)
        elif not isinstance(options, cls.Options):
            raise ValueError(f"options {type(options).__qualname__}: {method} takes {cls.Options.__qualname__}")
        elif given:
            options = dataclasses.replace(options, **given)
        for f in dataclasses.fields(TrainConfig):
            object.__setattr__(self, f.name, settings.get(f.name, f.default))
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "options", options)
        self._validate()

    def _validate(self):
        check_fields(self)
        check_spec(self.device)
        if not self.seeds:
            raise ValueError("--seeds: give at least one seed")
        if any(s < 0 for s in self.seeds):
            raise ValueError(f"--seeds {','.join(map(str, self.seeds))}: seeds must be non-negative integers")
        if self.fold != "all" and not str(self.fold).isdigit():
            raise ValueError(f"--fold {self.fold!r}: 'all' or a fold number")
        if self.select == "val" and not self.has_val:
            raise ValueError("--select val needs a validation split: give --val-fraction F (e.g. 0.2) or --val emobox")
        if self.layer not in ("last", "weighted") and not str(self.layer).isdigit():
            raise ValueError(f"--layer {self.layer!r}: use last, weighted or a layer number K")
        if self.head != "pooled" and (self.layer != "last" or self.normalization == "speaker"):
            raise ValueError(f"--head {self.head} pools the last layer's stored frames; it does not combine with "
                             f"--layer {self.layer} / --normalize speaker (use --head pooled for those)")
        if self.standardize and self.normalize == "speaker":
            raise ValueError("--standardize is --normalize global; give one of --standardize or --normalize speaker")
        self._validate_protocol()
        check_fields(self.options)
        self.options.validate(self)
        self.algorithm.validate(self)

    def _validate_protocol(self):
        """--protocol against the method and the settings that only it reads."""
        if not self.algorithm.supports_protocol(self.protocol):
            raise ValueError(f"--protocol {self.protocol}: `trainer run {self.method}` trains with its own fixed "
                             "schedule (docs/TRAINER.md); leave --protocol at paper")
        if not self.stop_rule:
            defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
            inert = [flag(k) for k in ("converge_patience", "converge_max_epochs") if getattr(self, k) != defaults[k]]
            if inert:
                raise ValueError(f"{', '.join(inert)} apply with --protocol converged; drop them or add --protocol "
                                 "converged")
        elif self.eval_every != 1:
            raise ValueError(f"--eval-every {self.eval_every}: --protocol {self.protocol} evaluates every epoch (it "
                             "stops on validation); drop --eval-every")

    def __getattr__(self, name: str):
        """A method option by its flat name (``cfg.reward``); an AttributeError names the method lacking it."""
        options = self.__dict__.get("options")
        if name.startswith("_") or options is None:
            raise AttributeError(name)
        if hasattr(options, name):
            return getattr(options, name)
        raise AttributeError(f"{name!r}: neither a shared setting nor an option of {self.__dict__.get('method')}")

    @property
    def algorithm(self) -> Method:
        """The method (an instance of its registered class)."""
        return get_method(self.method)()

    @property
    def normalization(self) -> str:
        """The normalisation in effect: --normalize, with --standardize meaning 'global'."""
        return "global" if self.standardize else self.normalize

    @property
    def uses_teacher(self) -> bool:
        """Whether the run trains (or loads) a teacher MLP."""
        return self.options.uses_teacher

    @property
    def uses_unlabeled(self) -> bool:
        """Whether the method has a stage 2 on the unlabelled pool."""
        return self.algorithm.unlabeled

    @property
    def views(self) -> str:
        """The method's view setting ('auto', 'frames', 'noise'; '' for methods without augmented views)."""
        return self.options.views

    @property
    def unlabeled_from(self) -> str:
        """The other corpus feeding stage 2 ('' = the same corpus, or a method without a pool)."""
        return getattr(self.options, "unlabeled_from", "")

    @property
    def unlabeled_dataset(self) -> str:
        """The dataset feeding the unsupervised stage."""
        return self.unlabeled_from or self.dataset

    @property
    def protocol_spec(self):
        """The --protocol (trainer.protocols.Protocol)."""
        return get_protocol(self.protocol)

    @property
    def stop_rule(self):
        """Early stopping of every stage on validation (trainer.protocols.StopRule), or None (fixed epochs)."""
        from trainer.protocols import StopRule

        if not self.protocol_spec.stops_on_validation:
            return None
        return StopRule(self.converge_patience, self.converge_max_epochs)

    @property
    def has_val(self) -> bool:
        """Whether runs hold out validation rows (asked for, the method's own, or the protocol's)."""
        return (self.val == "emobox" or self.val_fraction > 0 or self.algorithm.own_validation
                or self.protocol_spec.val_fraction > 0)

    @property
    def val_rows_fraction(self) -> float:
        """Share of the labelled rows carved out for validation (0 with --val emobox or no validation)."""
        if self.val == "emobox":
            return 0.0
        return self.val_fraction or self.algorithm.own_val_fraction(self) or self.protocol_spec.val_fraction

    @property
    def selects_val(self) -> bool:
        """Whether rows report the best-validation epoch (--select val, a method that always does, or a protocol
        that stops on validation and restores each stage's best-validation weights)."""
        return self.select == "val" or self.algorithm.own_validation or self.protocol_spec.stops_on_validation

    @property
    def epochs_total(self) -> int:
        """Epochs of both stages."""
        return self.epochs_baseline + self.epochs_stage2

    def flat(self) -> dict:
        """The shared fields and the method's options by their flat names."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        d.update({f.name: getattr(self.options, f.name) for f in dataclasses.fields(self.options)})
        return d

    def to_dict(self) -> dict:
        """Every setting by its flat name (results.json's config), in FLAT_FIELDS order (an option of no registered
        method left out), then the settings added since: a method's options always, a shared field only away from
        its default (so results of earlier settings keep their columns); seeds as a list."""
        mine, defaults = self.flat(), option_defaults()
        shared = {f.name: f.default for f in dataclasses.fields(self)}
        d = {k: mine[k] if k in mine else defaults[k] for k in FLAT_FIELDS if k in mine or k in defaults}
        d.update({k: v for k, v in mine.items() if k not in d and (k not in shared or v != shared[k])})
        d["seeds"] = list(self.seeds)
        return d

    def settings(self) -> dict:
        """Every setting that can change a number or a row of the results (all but HASH_EXCLUDED), as JSON values:
        those of FLAT_FIELDS and the method's options always, a shared field added since only away from its
        default. --normalize global is spelt as --standardize (the same run), so the two hash alike."""
        shared = {f.name: f.default for f in dataclasses.fields(self)}
        d = {k: v for k, v in self.to_dict().items() if k not in HASH_EXCLUDED
             and (k in FLAT_FIELDS or k not in shared or v != shared[k])}
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
        """Method, model, dataset, labels, the method's tags and the shared settings that tell runs apart."""
        parts = [self.method, self.model, self.dataset, self.labels, *self.algorithm.tags(self)]
        if self.labeled_fraction != 0.5:
            parts.append(f"lab{self.labeled_fraction:g}")
        if self.fold != "all":
            parts.append(f"fold{self.fold}")
        if self.has_val and not self.algorithm.own_validation:
            parts.append("val-emobox" if self.val == "emobox" else f"val{self.val_rows_fraction:g}")
        if self.select != "last":
            parts.append(f"select-{self.select}")
        if self.layer != "last":
            parts.append(f"layer-{self.layer}")
        if self.normalization != "none":
            parts.append(f"norm-{self.normalization}")
        if self.head != "pooled":
            parts.append(f"head-{self.head}")
        if self.protocol != "paper":
            parts.append(f"protocol-{self.protocol}")
        return "_".join(parts)

    def replace(self, **kw) -> "TrainConfig":
        """A copy with settings changed by their flat names; a new ``method`` keeps the options it also has."""
        method = kw.pop("method", self.method)
        flat = {k: v for k, v in self.flat().items() if k != "method"}
        if method != self.method:
            keep = set(method_options(method))
            flat = {k: v for k, v in flat.items() if k in SHARED or k in keep}
        return TrainConfig(method, **{**flat, **kw})


SHARED = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("method", "options"))
"""The settings every method shares (TrainConfig's fields)."""


def option_defaults() -> dict:
    """The default of every registered option by its flat name."""
    return {name: f.default for name, f in option_fields().items()}


def flat_fields() -> dict[str, dataclasses.Field]:
    """Every setting a configuration can name (shared fields and every method's options) by its flat name."""
    return {**{f.name: f for f in dataclasses.fields(TrainConfig) if f.name != "options"}, **option_fields()}


def method_options(method: str) -> tuple[str, ...]:
    """The option names of ``method``, in their dataclass order."""
    return tuple(f.name for f in dataclasses.fields(get_method(method).Options))


HASH_EXCLUDED = tuple(name for name, f in flat_fields().items() if not f.metadata.get("hashed", True))
"""Settings left out of the config hash and of result rows: they change where and how a run is shown or how fast
it goes, not its numbers (a --teacher-from teacher is checked to be the one the run would train)."""

_clash = set(SHARED) & set(option_fields())
if _clash:
    raise ValueError(f"method options {sorted(_clash)} reuse names of the shared settings (TrainConfig); rename them")

__all__ = ["TrainConfig", "FLAT_FIELDS", "HASH_EXCLUDED", "SHARED", "SIX_CLASSES", "METHODS", "get_method",
           "field_docs", "flat_fields", "method_options", "option_defaults", "load_methods"]
