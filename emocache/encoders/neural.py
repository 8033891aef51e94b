"""The base of every encoder with weights, and the compute-precision check.

A :class:`NeuralEncoder` subclass is one registered model. Besides running the model it carries what tests and
benchmarks need, so a new model is one class and nothing else changes: ``full_config`` (the real shapes),
``tiny_overrides`` (test-sized shapes), :meth:`save_random` (random weights written in its library's real file
layout, loaded back through the offline path users' weights take) and :meth:`reference` (the unmodified
library's own single-utterance call, which the exactness tests compare against).

Heavy libraries (transformers, funasr) are imported inside methods, never at module import, so listing the
registered models stays cheap.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from abc import abstractmethod
from pathlib import Path

import numpy as np
import torch

from emocache.config import DTYPES, EncoderConfig
from emocache.encoders.base import Encoder, EncoderError
from emocache.encoders.checkpoint import read_yaml
from emocache.encoders.compat_torch import graphs_compiled
from emocache.encoders.loading import resolve_weights
from emocache.signals import seconds_to_samples, speech_like

HALF_TYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
COSINE_MIN = 0.999
"""Lowest pooled-vector cosine to fp32 that ``--dtype auto`` accepts for a half type."""
CHECK_SECONDS = (1.3, 3.7, 8.2)
"""Lengths of the speech-like waves the precision check encodes."""


def cosine_to_fp32(encoder: "NeuralEncoder", dtype: str, waves: list[np.ndarray] | None = None) -> float:
    """Lowest cosine similarity between pooled vectors computed with the weights cast to ``dtype`` and with the
    fp32 weights (run eagerly, the encoder's own frontend)."""
    waves = waves or speech_like(seconds_to_samples(CHECK_SECONDS, encoder.sample_rate), encoder.sample_rate)
    with encoder.precision(torch.float32):
        ref = encoder.encode(waves).pooled
    with encoder.precision(HALF_TYPES[dtype]):
        low = encoder.encode(waves).pooled
    if not np.isfinite(low).all():
        return float("nan")
    num = (ref * low).sum(1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(low, axis=1) + 1e-12
    return float((num / den).min())


def select_dtype(encoder: "NeuralEncoder", requested: str) -> torch.dtype:
    """fp32 on CPU for ``auto``; on GPU the first of bf16, fp16 whose pooled vectors pass the cosine check."""
    if requested == "fp32":
        return torch.float32
    if requested in HALF_TYPES:
        return HALF_TYPES[requested]
    if requested != "auto":
        raise EncoderError(f"dtype {requested!r}: use auto, fp32, bf16 or fp16")
    if encoder.device.type != "cuda":
        return torch.float32
    for name in ("bf16", "fp16"):
        cos = cosine_to_fp32(encoder, name)
        encoder.precision_checks[name] = cos
        if cos >= COSINE_MIN:
            return HALF_TYPES[name]
    return torch.float32


FUNASR_REQUIREMENT = "funasr>=1.1,<1.5"
"""The funasr releases whose emotion2vec and SenseVoice imports the ``funasr`` extra holds (checked on 1.4)."""
FUNASR_INSTALL = f'pip install -e ".[funasr]" && pip install --no-deps "{FUNASR_REQUIREMENT}"'
"""funasr for emotion2vec and SenseVoice without its requirements that they never import (modelscope, oss2, the
aliyun SDKs, jieba, umap-learn, ...): the extra installs what they do import."""


def import_or_hint(module: str, package: str, install: str | None = None):
    """Import a heavy optional dependency, or raise an :class:`EncoderError` that says how to install it
    (``install``, else ``pip install PACKAGE``)."""
    import importlib
    import io

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # funasr prints an ffmpeg notice on import; audio is ours
            return importlib.import_module(module)
    except ImportError as e:
        raise EncoderError(f"{module} is needed for this encoder: {install or f'pip install {package!r}'} "
                           f"({e})") from e


@contextlib.contextmanager
def record_hidden_states(layers: torch.nn.ModuleList, on: bool = True):
    """Record what transformers returns as ``hidden_states`` when a model's encoder is called directly (its
    recording hooks sit on the top-level model): the first layer's input, then each layer's output. The caller
    replaces the last item by the encoder's final output, as transformers does. Yields the list (None when off).
    """
    if not on:
        yield None
        return
    out: list[torch.Tensor] = []
    first = lambda m, args, kwargs: out.append(args[0] if args else kwargs["hidden_states"])  # noqa: E731
    hooks = [layers[0].register_forward_pre_hook(first, with_kwargs=True)]
    hooks += [layer.register_forward_hook(lambda m, a, o: out.append(o[0] if isinstance(o, tuple) else o))
              for layer in layers]
    try:
        yield out
    finally:
        for h in hooks:
            h.remove()


def config_model_type(path: Path) -> str | None:
    """What a model folder says it is: ``model_type`` of ``config.json`` (transformers) or ``model`` of
    ``config.yaml`` (funasr); None when neither says."""
    path = Path(path)
    if (path / "config.json").is_file():
        try:
            return json.loads((path / "config.json").read_text()).get("model_type")
        except (ValueError, AttributeError):
            raise EncoderError(f"{path}/config.json is not a JSON object; the folder does not hold a model") from None
    if (path / "config.yaml").is_file():
        conf = read_yaml(path / "config.yaml")
        return conf.get("model") if isinstance(conf, dict) else None
    return None


class NeuralEncoder(Encoder):
    """An encoder with weights: resolves them offline (or builds random ones), moves the model, picks the dtype.

    Subclasses set the repo ids, ``required_files``, ``model_types``, ``full_config`` and ``tiny_overrides`` and
    implement :meth:`load` (from a directory), :meth:`build_random` (from the config, with overrides),
    :meth:`save_random` and :meth:`reference`.
    """

    max_seconds = 30.0
    """Inputs over 30 s follow the long-utterance policy (windows by default) for every neural encoder."""
    has_weights = True
    dtypes = DTYPES
    hf_repos: tuple[str, ...] = ()
    """Hugging Face repo ids whose cached snapshots hold these weights (the first is the download hint)."""
    ms_repos: tuple[str, ...] = ()
    """ModelScope repo ids, likewise."""
    required_files: tuple[str, ...] = ()
    """Files a weights folder must hold besides the weights."""
    model_types: tuple[str, ...] = ()
    """What the folder's config must say it is (config.json ``model_type`` / config.yaml ``model``)."""
    full_config: dict = {}
    """The real model's config (full-size random weights have the real FLOPs)."""
    tiny_overrides: dict = {}
    """Config fields that shrink the model to test size (``emocache.encoders.tiny``)."""

    device_frontend: bool = False
    """The class has a frontend of batched torch ops (:meth:`device_frontend_run`) for ``--frontend device``."""
    compile_pays: bool = True
    """Whether ``--compile auto`` compiles on CUDA: the compiled layers were measured faster than eager there
    (gpu-check on an H200, docs/BENCHMARKS.md); ``--compile on`` compiles whatever this says."""

    def __init__(self, config: EncoderConfig | None = None):
        super().__init__(config)
        self.precision_checks: dict[str, float] = {}
        self.compute_dtype = torch.float32
        self._master: list[dict[str, torch.Tensor]] | None = None
        self._eager = 0
        self._built = False
        self.compiled = False
        self.compile_stats = {"graphs": 0, "seconds": 0.0, "error": None}
        """Graphs torch.compile built for this encoder, the wall seconds of the calls that built them, and the
        error that turned compiling off (None)."""
        self.frontend_on_device = self._resolve_frontend()
        if self.config.random_init:
            self.build_random(copy.deepcopy(self.config.config_overrides))
            self._identity = {"weights": "random-init", "weights_source": "random-init",
                              "weights_config": {k: repr(v) for k, v in self.config.config_overrides.items()}}
        else:
            found = resolve_weights(self.name, self.required_files, self.hf_repos, self.ms_repos,
                                    self.config.model_path)
            self.check_model_type(found.path)
            self.load(found.path)
            self._identity = found.identity
        for m in self.modules():
            m.eval().requires_grad_(False).to(self.device)
        self.resolve_layers()
        self.set_dtype(select_dtype(self, self.config.dtype))
        if self._resolve_compile():
            self.compile()

    # -- frontend, dtype and compile settings ----------------------------------------------------------------
    def _resolve_frontend(self) -> bool:
        want = self.config.frontend
        if want == "device" and not self.device_frontend:
            raise EncoderError(f"--frontend device: {self.name} has no device frontend; use --frontend cpu or auto")
        return want == "device" or (want == "auto" and self.device_frontend and self.device.type == "cuda")

    def _resolve_compile(self) -> bool:
        want = self.config.compile
        if want == "on" and self.wants_hidden:
            raise EncoderError("--compile on: --layers/--frames-layer record hidden states with hooks on the layers, "
                               "which compiled layers do not run; use --compile off (or auto) with them")
        return want == "on" or (want == "auto" and self.device.type == "cuda" and self.compile_pays
                                and not self.wants_hidden)

    def set_dtype(self, dtype: torch.dtype) -> None:
        """Cast the weights to ``dtype`` once (no autocast: the model computes in its weights' type). The fp32
        weights are kept in host memory the first time they are cast away, so fp32 can be restored exactly."""
        if dtype == self.compute_dtype:
            return
        if self.compute_dtype == torch.float32 and self._master is None:
            self._master = [{k: t.detach().to("cpu", copy=True) for k, t in _float_tensors(m)} for m in self.modules()]
        if self.compute_dtype != torch.float32:  # back to the fp32 weights first: never cast one half type to another
            with torch.no_grad():
                for m, master in zip(self.modules(), self._master):
                    m.float()
                    for k, t in _float_tensors(m):
                        t.copy_(master[k])
        if dtype != torch.float32:
            for m in self.modules():
                m.to(dtype)
        self.compute_dtype = dtype

    @contextlib.contextmanager
    def precision(self, dtype: torch.dtype):
        """Run with the weights in ``dtype`` (eagerly: compiled layers are built for the chosen dtype), then cast
        back."""
        keep = self.compute_dtype
        self.set_dtype(dtype)
        try:
            with self.eager():
                yield self
        finally:
            self.set_dtype(keep)

    @contextlib.contextmanager
    def eager(self):
        """Run without the compiled layers."""
        self._eager += 1
        try:
            yield self
        finally:
            self._eager -= 1

    @contextlib.contextmanager
    def naive(self):
        """The naive way EmoBox runs a model: fp32 weights, eager, the CPU frontend (batch 1 is the caller's)."""
        keep = self.frontend_on_device
        self.frontend_on_device = False
        try:
            with self.precision(torch.float32):
                yield self
        finally:
            self.frontend_on_device = keep

    def compile_regions(self) -> list[torch.nn.Module]:
        """The repeated layers torch.compile builds once each (regional compilation: every layer of a stack shares
        one graph); empty: nothing to compile."""
        return []

    def compile(self) -> None:
        """torch.compile the repeated layers with dynamic shapes: one graph per kind of layer serves every batch
        shape, so recompiles are bounded whatever the lengths; batches of one window run eagerly (a size of 1 would
        be specialised into another graph). A failure to compile turns compiling off, recorded in
        ``compile_stats["error"]``, and the batch runs eagerly."""
        regions = self.compile_regions()
        if not regions:
            self.compile_stats["error"] = f"{self.name} has no layers to compile"
            return
        for m in regions:
            m.compile(dynamic=True)
        self.compiled = self._built = True

    def _compiled_now(self, windows: int) -> bool:
        return self.compiled and not self._eager and windows >= 2

    def submit(self, inputs: dict, owner: list[int], frames: bool = True):
        if self._compiled_now(len(owner)):
            before, t0 = graphs_compiled(), time.perf_counter()
            try:
                out = super().submit(inputs, owner, frames)
            except Exception as e:  # a compile failure: record it and run this batch (and the rest) eagerly
                with torch.compiler.set_stance("force_eager"):
                    out = super().submit(inputs, owner, frames)
                self.compiled = False
                self.compile_stats["error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
                return out
            built = graphs_compiled() - before
            if built:
                self.compile_stats["graphs"] += built
                self.compile_stats["seconds"] += time.perf_counter() - t0
            return out
        if not self._built:
            return super().submit(inputs, owner, frames)
        with torch.compiler.set_stance("force_eager"):  # the layers were compiled: tell torch to skip them
            return super().submit(inputs, owner, frames)

    def check_model_type(self, path: Path) -> None:
        """Refuse another family's weights before the library fails on them with an internal error."""
        got = config_model_type(path)
        if self.model_types and got is not None and got not in self.model_types:
            raise EncoderError(f"{path} holds a {got!r} model, not {self.name} (expects {' or '.join(self.model_types)}"
                               "); point --model-path at this model's files or pick the --model that matches them")

    @abstractmethod
    def load(self, path: Path) -> None:
        """Build the model from the files in ``path`` with a strict weight-key check."""

    @abstractmethod
    def build_random(self, overrides: dict) -> None:
        """Build the model with random weights from ``full_config`` (``overrides`` changes config fields)."""

    @classmethod
    @abstractmethod
    def save_random(cls, directory: Path, overrides: dict, seed: int) -> None:
        """Write a randomly initialised model into ``directory`` in its library's own file layout."""

    @classmethod
    @abstractmethod
    def reference(cls, path: Path, wave: np.ndarray) -> np.ndarray:
        """Frames (T, D) from the unmodified library model on one unpadded utterance, as its authors run it."""

    def modules(self) -> list[torch.nn.Module]:
        """The torch modules to move to the device."""
        return [self.model]

    def weights_identity(self) -> dict:
        return dict(self._identity)

    def provenance(self) -> dict:
        """The base provenance plus where the frontend ran and whether the layers were compiled (both change
        values only within float tolerance: docs/ENCODERS.md)."""
        return {**super().provenance(), "frontend": "device" if self.frontend_on_device else "cpu",
                "compiled": self.compiled}

    @property
    def dtype_name(self) -> str:
        return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.compute_dtype]

    # -- frontends ------------------------------------------------------------------------------------------------
    raw_length: int | None = None
    """Samples every raw wave is padded to for the device frontend (None: the batch's longest)."""

    def frontend(self, waves: list[np.ndarray]) -> dict:
        """In loader threads: with the device frontend only the padding (raw waves into one page-locked (B, N)
        buffer, ``raw``), else :meth:`cpu_frontend` (its tensors page-locked on CUDA). ``num_samples`` (B,) either
        way."""
        n = torch.tensor([w.size for w in waves], dtype=torch.long)
        if self.device.type == "cuda":
            n = n.pin_memory()  # the device frontend copies it without waiting
        if self.frontend_on_device:
            return {"raw": self.pad_waves(waves, self.raw_length), "num_samples": n}
        inputs = self.cpu_frontend(waves)
        if self.device.type == "cuda":
            inputs = {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in inputs.items()}
        return {**inputs, "num_samples": n}

    def cpu_frontend(self, waves: list[np.ndarray]) -> dict:
        """The library's own frontend on the CPU (the default pads the waves into ``wave``)."""
        return {"wave": self.pad_waves(waves)}

    def model_input(self, inputs: dict) -> torch.Tensor:
        """The frontend's output on the device in the compute dtype: the CPU frontend's tensor copied there, or the
        raw waves run through :meth:`device_frontend_run` on the device."""
        if "raw" in inputs:
            x = self.device_frontend_run(self.to_device(inputs["raw"]), self.to_device(inputs["num_samples"]))
        else:
            x = self.to_device(inputs[self.input_key])
        return x.to(self.compute_dtype)

    input_key = "wave"
    """The key of the CPU frontend's model input."""

    def device_frontend_run(self, raw: torch.Tensor, num_samples: torch.Tensor) -> torch.Tensor:
        """The frontend as batched torch ops on the device: (B, N) raw waves, (B,) sample counts -> model input."""
        raise NotImplementedError(f"{self.name} has no device frontend")

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device, non_blocking=t.is_pinned())


def _float_tensors(module: torch.nn.Module):
    """(name, tensor) of every floating-point parameter and buffer (persistent or not)."""
    for k, t in list(module.named_parameters()) + list(module.named_buffers()):
        if t.is_floating_point():
            yield k, t
