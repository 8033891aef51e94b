"""Any Hugging Face speech encoder by id: ``--model hf:<repo-id-or-dir>``.

The model and its feature extractor load with transformers' ``AutoModel`` / ``AutoFeatureExtractor`` from the
same offline lookup as the registered encoders (a local directory, ``--model-path``, else the Hugging Face cache
through huggingface_hub with ``local_files_only``). Supported: models with a convolutional waveform encoder
(Wav2Vec2, HuBERT, WavLM, Data2VecAudio, UniSpeech(-Sat), ...) and Whisper encoders. Frames are
``last_hidden_state``, pooled by the mean over valid frames.

Batching per architecture (written to provenance as ``batching``):

- ``attention-mask``: the feature extractor says ``return_attention_mask`` (layer-norm models) and the
  architecture is one whose masked batches are exact (:data:`MASK_EXACT`): padded batches with a sample-level
  attention mask, exactly as transformers runs them.
- ``one-at-a-time``: otherwise (group-norm models, whose statistics padding would change; Data2VecAudio, whose
  positional convolution stack spreads padding; architectures not known to be exact): each utterance runs
  alone, unpadded, inside the batch.
- ``fixed-window``: Whisper: every window is padded to 30 s by its feature extractor, as Whisper is trained.

The store entry's model name is derived from the id (``org/name`` -> ``org--name``, a directory -> its name,
other characters -> ``_``) or set with ``--name``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import torch

from emocache.config import EncoderConfig
from emocache.encoders.base import EncoderError, ceil_div, conv_stack_frames
from emocache.encoders.checkpoint import TRUST_FLAG, randomize
from emocache.encoders.neural import NeuralEncoder, import_or_hint
from emocache.encoders.registry import PREFIXES
from emocache.inputs import LIMITS, InputError, check_file
from emocache.paths import UnsafeNameError, check_name, safe_name

PREFIX = "hf"
TRAINING_ONLY = ("masked_spec_embed",)
"""Weights used only in pre-training (absent from many fine-tuned checkpoints)."""
MASK_EXACT = ("wav2vec2", "hubert", "wavlm", "unispeech", "unispeech-sat")
"""Architectures whose masked, padded batches equal unpadded runs (one positional convolution over zeroed
padding). Others, e.g. Data2VecAudio (a stack of positional convolutions with layer norms, which spread padding
into valid frames), run one at a time even when their feature extractor returns a mask."""


def _is_dir(spec: str) -> bool:
    """Whether ``spec`` names a local directory (a name the file system refuses, e.g. too long, is not one)."""
    try:
        return Path(spec).expanduser().is_dir()
    except (OSError, RuntimeError):
        return False
def conv_output_length(config, num_samples: int) -> int:
    """Frames of a wav2vec2-style convolutional feature encoder (and adapter, when the config adds one) for
    ``num_samples`` samples, from the config alone: each layer gives ``(n - kernel) // stride + 1``; an adapter
    layer (kernel 3, padding 1) gives ``(n - 1) // stride + 1``, as transformers counts them."""
    n = conv_stack_frames(num_samples, zip(config.conv_kernel, config.conv_stride))
    if getattr(config, "add_adapter", False):
        for _ in range(config.num_adapter_layers):
            n = (n - 1) // config.adapter_stride + 1 if n > 0 else 0
    return n


def entry_name(spec: str) -> str:
    """The store entry name for ``hf:<spec>``: a repo id ``org/name`` -> ``org--name``, a directory -> its name;
    characters a store name cannot hold -> ``_``; a name still unusable (e.g. over NAME_MAX bytes) -> its
    readable start plus a hash (:func:`emocache.paths.safe_name`)."""

    base = Path(spec).expanduser().resolve().name if _is_dir(spec) else spec.strip("/").replace("/", "--")
    return safe_name(re.sub(r"[^\w.+:=@-]", "_", base).lstrip(".") or "hf-model", "hf-model")


def _check_name(name: str) -> str:
    try:
        return check_name(name, "model")
    except UnsafeNameError as e:
        raise EncoderError(f"--name: {e}") from None


def check_model_files(path: Path) -> None:
    """Refuse a model folder whose JSON configs are not regular files within the spec limit (a FIFO would hang
    transformers, a huge file exhaust memory) before transformers opens them."""

    for name in ("config.json", "preprocessor_config.json"):
        if (Path(path) / name).exists() or (Path(path) / name).is_symlink():
            try:
                check_file(Path(path) / name, LIMITS.spec_bytes, "model config")
            except InputError as e:
                raise EncoderError(str(e)) from None


class HFEncoder(NeuralEncoder):
    """A transformers speech encoder named by repo id or directory (subclassed per id by :func:`hf_class`)."""

    spec = ""
    """What follows ``hf:``: a repo id or a directory."""
    required_files = ("config.json", "preprocessor_config.json")

    def __init__(self, config: EncoderConfig | None = None):
        config = config or EncoderConfig()
        if _is_dir(self.spec) and not config.model_path:
            config = dataclasses.replace(config, model_path=str(Path(self.spec).expanduser()))
        if config.name:
            self.name = _check_name(config.name)
        if config.trust_checkpoint:
    
            raise EncoderError(f"{TRUST_FLAG} applies to funasr model.pt files; hf: models load safetensors, or .bin "
                               "files weights-only (drop the flag)")
        super().__init__(config)

    # -- loading --------------------------------------------------------------------------------------------------
    def load(self, path: Path) -> None:
        tf = import_or_hint("transformers", "transformers")

        check_model_files(path)
        try:  # safetensors when the folder has them (transformers' own preference), else weights-only unpickling
            model, info = tf.AutoModel.from_pretrained(path, local_files_only=True, output_loading_info=True,
                                                       weights_only=True)
            self.features = tf.AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
        except Exception as e:  # transformers and torch raise many types (UnpicklingError for a pickle with code)
            text = str(e)
            if "Weights only load failed" in text or type(e).__name__ == "UnpicklingError":
                raise EncoderError(f"{path}: its weights (.bin) are a pickle that is not plain weights; loading it "
                                   "would run code from the file, and hf: models load pickles weights-only (no "
                                   f"{TRUST_FLAG}). Convert it to safetensors where you trust its source") from None
            raise EncoderError(f"{path}: transformers cannot load this model offline ({type(e).__name__}: "
                               f"{(text.splitlines() or [''])[0][:200]})") from None
        lost = [k for k in info["missing_keys"] if not k.endswith(TRAINING_ONLY) and not k.startswith("decoder.")]
        if lost:
            raise EncoderError(f"{path}: checkpoint lacks {len(lost)} weights (e.g. {', '.join(sorted(lost)[:5])});"
                               " the file is incomplete or for another model")
        self._set_model(model)

    def build_random(self, overrides: dict) -> None:
        """Random weights from the config and feature extractor found for the id (benchmarks)."""
        tf = import_or_hint("transformers", "transformers")
        path = Path(self.config.model_path or self.spec).expanduser()
        if not _is_dir(str(path)) or not (path / "config.json").is_file():
            raise EncoderError(f"hf:{self.spec}: --random-init needs a directory holding config.json and "
                               "preprocessor_config.json")
        cfg = tf.AutoConfig.from_pretrained(path, local_files_only=True, **overrides)
        self.features = tf.AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
        self._set_model(tf.AutoModel.from_config(cfg))

    def _set_model(self, model) -> None:
        self.whisper = model.config.model_type == "whisper"
        if self.whisper:
            model = model.get_encoder()
        elif not hasattr(model.config, "conv_kernel"):
            raise EncoderError(f"hf:{self.spec}: a {model.config.model_type!r} model has no waveform encoder this "
                               "adapter knows; supported: wav2vec2-style models (Wav2Vec2, HuBERT, WavLM, "
                               "Data2VecAudio, UniSpeech-Sat) and Whisper")
        self.model = model.eval()
        self.fixed_window = self.whisper
        if self.whisper:
            self.batching = "fixed-window"
        elif getattr(self.features, "return_attention_mask", False) and model.config.model_type in MASK_EXACT:
            self.batching = "attention-mask"
        else:
            self.batching = "one-at-a-time"

    @classmethod
    def save_random(cls, directory: Path, overrides: dict, seed: int) -> None:
        raise EncoderError("hf: models are saved with transformers' save_pretrained")

    @classmethod
    def reference(cls, path: Path, wave: np.ndarray) -> np.ndarray:
        """transformers' own feature extractor and model on one unpadded wave (Whisper: its 30-s window)."""
        tf = import_or_hint("transformers", "transformers")
        fe = tf.AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
        model = tf.AutoModel.from_pretrained(path, local_files_only=True).eval()
        with torch.no_grad():
            if model.config.model_type == "whisper":
                x = fe(wave, sampling_rate=fe.sampling_rate, return_tensors="pt").input_features
                out = model.get_encoder()(x).last_hidden_state[0]
                return out[: ceil_div(ceil_div(wave.size, fe.hop_length), 2)].numpy()
            return model(**fe(wave, sampling_rate=fe.sampling_rate, return_tensors="pt")).last_hidden_state[0].numpy()

    # -- running --------------------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        c = self.model.config
        return int(getattr(c, "d_model", None) or c.hidden_size) if self.whisper else int(c.hidden_size)

    @property
    def max_seconds(self) -> float:
        return float(self.features.chunk_length) if self.whisper else NeuralEncoder.max_seconds

    @property
    def num_layers(self) -> int:
        c = self.model.config
        return int(c.encoder_layers if self.whisper else c.num_hidden_layers)

    def valid_frames(self, num_samples: int) -> int:
        if self.whisper:
            return ceil_div(ceil_div(num_samples, self.features.hop_length), 2)
        return conv_output_length(self.model.config, num_samples)

    def cpu_frontend(self, waves: list[np.ndarray]) -> dict:
        """The checkpoint's own feature extractor (normalisation, mel filterbanks, padding)."""
        sr = self.features.sampling_rate
        if self.batching == "one-at-a-time":
            return {"pieces": [self.features(w, sampling_rate=sr, return_tensors="pt").input_values for w in waves]}
        out = self.features(list(waves), sampling_rate=sr, padding=True if self.batching == "attention-mask" else "max_length",
                            return_attention_mask=self.batching == "attention-mask", return_tensors="pt")
        return dict(out)

    def _in(self, t: torch.Tensor) -> torch.Tensor:
        """A frontend tensor on the device, floating ones in the weights' dtype."""
        t = self.to_device(t)
        return t.to(self.compute_dtype) if t.is_floating_point() else t

    def forward(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        n = inputs["num_samples"]
        lengths = torch.tensor([self.valid_frames(int(x)) for x in n])
        want = self.wants_hidden
        pad = lambda xs: torch.nn.utils.rnn.pad_sequence(xs, batch_first=True)  # noqa: E731  (T_i, D) -> (B, T, D)
        if self.batching == "one-at-a-time":
            outs = [self.model(self._in(x), output_hidden_states=want) for x in inputs["pieces"]]
            frames = pad([o.last_hidden_state[0] for o in outs])  # (B, T, D)
            hidden = tuple(pad([o.hidden_states[k][0] for o in outs]) for k in range(len(outs[0].hidden_states))) \
                if want else None
        else:
            if self.whisper:
                out = self.model(self._in(inputs["input_features"]), output_hidden_states=want)
            else:
                out = self.model(self._in(inputs["input_values"]), output_hidden_states=want,
                                 attention_mask=self._in(inputs["attention_mask"]))
            frames, hidden = out.last_hidden_state, out.hidden_states  # (B, T, D), L + 1 of (B, T, D) or None
        return frames, lengths, hidden

    def compile_regions(self) -> list[torch.nn.Module]:
        stack = self.model if self.whisper else getattr(self.model, "encoder", None)
        return list(getattr(stack, "layers", []))

    def provenance(self) -> dict:
        return {**super().provenance(), "source": f"{PREFIX}:{self.spec}",
                "architecture": self.model.config.model_type, "batching": self.batching}


_CLASSES: dict[str, type[HFEncoder]] = {}


def hf_class(spec: str) -> type[HFEncoder]:
    """The encoder class for ``hf:<spec>`` (one per spec), named for its store entry."""
    if not spec:
        raise EncoderError("--model hf: needs a repo id or a directory after 'hf:', e.g. hf:facebook/hubert-base-ls960")
    if spec not in _CLASSES:
        name = _check_name(entry_name(spec))
        repos = () if _is_dir(spec) else (spec,)
        _CLASSES[spec] = type(f"HF[{spec}]", (HFEncoder,), {"spec": spec, "name": name, "hf_repos": repos,
                                                            "__doc__": f"hf:{spec}"})
    return _CLASSES[spec]


PREFIXES[PREFIX] = hf_class
