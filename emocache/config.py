"""Settings of an extraction run and of an encoder: frozen dataclasses, validated when built.

This module imports nothing heavy (no torch, no zarr), so the CLI takes its defaults from here at start-up.
A bad value raises ``ValueError`` with one line naming the option and the values it takes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

DEVICES = ("auto", "cpu", "cuda", "cuda:I")
"""Device spellings: auto = the first CUDA device when torch sees one, else the CPU; cuda:I = the I-th GPU."""
DTYPES = ("auto", "fp32", "bf16", "fp16")
"""Compute precisions; auto = fp32 on CPU, on GPU the first half type that passes the cosine check."""
LONG_POLICIES = ("window", "truncate", "skip")
"""What happens to inputs longer than the encoder's window."""
COMPILE_MODES = ("auto", "on", "off")
"""torch.compile of the encoders' repeated layers; auto = on for CUDA, off on the CPU."""
FRONTENDS = ("auto", "cpu", "device")
"""Where neural frontends run: device = batched torch ops on the model's device; auto = device on CUDA, else cpu."""

DEFAULT_BLOCK = 128
"""Utterances per block (``--block-size``): the unit of commit, resume and distribution of a store."""

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device(device: str, option: str = "--device") -> str:
    """Refuse a device spelling torch would not take (``gpu``, ``cuda0``) with the accepted ones."""
    if not _DEVICE.fullmatch(device):
        raise ValueError(f"{option} {device!r}: use one of {', '.join(DEVICES)} (e.g. cuda:0)")
    return device


def check_choice(value: str, choices: tuple[str, ...], option: str) -> str:
    if value not in choices:
        raise ValueError(f"{option} {value!r}: use one of {', '.join(choices)}")
    return value


MAX_BATCH_SECONDS = 3600.0
"""Largest --batch-seconds: an hour of padded audio per model batch (230 MB of 16 kHz float32 samples)."""
MAX_AUDIO_SECONDS = 86400.0
"""Largest --max-audio-seconds: a day."""
MAX_ROWS = 1 << 24
"""Largest --block-size and --max-batch (the store's most utterances per entry)."""
MAX_THREADS = 1024
"""Most --loader-threads."""


def check_positive(value: float, option: str, integer: bool = False, high: float | None = None) -> None:
    """A count or size that must be a finite number above zero (and at most ``high`` when given)."""
    if integer and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{option} {value!r}: expected a whole number")
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise ValueError(f"{option} {value!r}: must be a number above 0")
    if high is not None and value > high:
        raise ValueError(f"{option} {value!r}: at most {high:g}")


@dataclass(frozen=True)
class EncoderConfig:
    """Settings shared by every encoder."""

    model_path: str | None = None
    """Directory holding the weights (else the Hugging Face / ModelScope caches are searched)."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:i."""
    dtype: str = "auto"
    """auto | fp32 | bf16 | fp16. auto = fp32 on CPU, the encoder's validated half type on GPU."""
    long_policy: str = "window"
    """Utterances longer than the encoder's window: window (split, frames concatenated) | truncate | skip."""
    random_init: bool = False
    """Build full-size random weights from the config (benchmarks only; provenance says so)."""
    config_overrides: dict = field(default_factory=dict)
    """Config fields to override (tests build tiny random models this way)."""
    name: str | None = None
    """Store entry name for an ``hf:`` model (default: derived from its id)."""
    layers: str = "last"
    """last | all | K,K,...: hidden_states layers (0 = embeddings) pooled besides the final output."""
    frames_layer: int | None = None
    """hidden_states layer stored as frames (None: the final output, as ``--layers last``)."""
    trust_checkpoint: bool = False
    """Load a checkpoint that is not plain weights with full pickle (runs any code it holds; ``--trust-checkpoint``,
    only for files from a source you trust). Off: weights-only loading, and such a file is an error."""
    compile: str = "auto"
    """auto | on | off: torch.compile the encoder's repeated layers (auto: on for CUDA, off on the CPU)."""
    frontend: str = "auto"
    """auto | cpu | device: where the frontend (log-mel, fbank, normalisation) runs (auto: device on CUDA)."""

    def __post_init__(self):
        check_choice(self.compile, COMPILE_MODES, "--compile")
        check_choice(self.frontend, FRONTENDS, "--frontend")

    @property
    def torch_device(self):
        """The torch device; a bad spelling or a CUDA device this machine lacks is a ValueError naming the devices
        there are (the encoder checks dtype and long policy itself)."""
        import torch

        check_device(self.device)
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dev = torch.device(self.device)
        if dev.type == "cuda":
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if n == 0 or (dev.index or 0) >= n:
                have = ["cpu"] + [f"cuda:{i}" for i in range(n)]
                why = "" if n else (" (this torch has no CUDA support)" if torch.version.cuda is None
                                    else " (no CUDA device is visible)")
                raise ValueError(f"--device {self.device}: not on this machine{why}; available: {', '.join(have)}")
        return dev


@dataclass(frozen=True)
class ExtractConfig:
    """Everything one ``emocache extract`` run needs."""

    model: str
    """Registered model name (``emocache models`` lists them) or ``hf:<repo-id-or-dir>``."""
    manifests: tuple[str, ...]
    """EmoBox jsonl files or dataset folders."""
    store: str
    """Store URL: a local path, s3://..., gs://..."""
    name: str | None = None
    """Store entry name for an ``hf:`` model (default: derived from its id)."""
    layers: str = "last"
    """last | all | K,K,...: hidden_states layers (0 = embeddings) whose pooled vectors are stored too."""
    frames_layer: int | None = None
    """hidden_states layer stored as frames (None: the final output)."""
    audio_root: tuple[str, ...] = ()
    """PREFIX=DIR remaps applied to the manifests' wav paths."""
    model_path: str | None = None
    """Directory with the model's weights (else HF / ModelScope caches)."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:i."""
    dtype: str = "auto"
    """auto | fp32 | bf16 | fp16."""
    frames: bool = True
    """Store frame-level features besides pooled vectors."""
    block_size: int = DEFAULT_BLOCK
    """Utterances per block: the unit of commit, resume and distribution."""
    batch_seconds: float | None = None
    """Padded audio seconds per model batch (length-sorted batches under this budget); None: 240 on the CPU, the
    encoder's GPU budget on CUDA."""
    max_batch: int | None = None
    """Most utterances per model batch; None: 64 on the CPU, the encoder's GPU maximum on CUDA."""
    long_policy: str = "window"
    """Inputs longer than the encoder's window: window | truncate | skip."""
    max_audio_seconds: float = 600.0
    """Longer files are recorded as failed without decoding (guards memory); raise it to keep them."""
    loader_threads: int = 2
    """Threads decoding, resampling and running frontends ahead of the model."""
    redo_failed: bool = False
    """Redo blocks holding failed utterances or failing verification."""
    scheduler: str | None = None
    """dask.distributed scheduler address or local:N; None runs in this process."""
    part: str | None = None
    """I/N: run only blocks b with b % N == I (independent writer processes sharing one store)."""
    storage_options: dict = field(default_factory=dict)
    """fsspec options for remote stores (else $EMOCACHE_STORAGE_OPTIONS, else the filesystem's defaults)."""
    encoder_overrides: dict = field(default_factory=dict)
    """Encoder config overrides (tests build tiny random models this way)."""
    trust_checkpoint: bool = False
    """Allow a full-pickle load of a checkpoint that is not plain weights (``--trust-checkpoint``; runs its code)."""
    compile: str = "auto"
    """auto | on | off: torch.compile the encoder's repeated layers (auto: on for CUDA)."""
    frontend: str = "auto"
    """auto | cpu | device: where the neural frontends run (auto: on the device for CUDA)."""

    def __post_init__(self):
        check_positive(self.block_size, "--block-size", integer=True, high=MAX_ROWS)
        if self.max_batch is not None:
            check_positive(self.max_batch, "--max-batch", integer=True, high=MAX_ROWS)
        check_positive(self.loader_threads, "--loader-threads", integer=True, high=MAX_THREADS)
        if self.batch_seconds is not None:
            check_positive(self.batch_seconds, "--batch-seconds", high=MAX_BATCH_SECONDS)
        check_positive(self.max_audio_seconds, "--max-audio-seconds", high=MAX_AUDIO_SECONDS)
        if self.name is not None and not self.model.startswith("hf:"):
            raise ValueError(f"--name {self.name!r}: only hf: models take a store entry name; {self.model}'s entry is "
                             f"named {self.model!r} (drop --name)")
        check_device(self.device)
        check_choice(self.dtype, DTYPES, "--dtype")
        check_choice(self.long_policy, LONG_POLICIES, "--long-policy")
        check_choice(self.compile, COMPILE_MODES, "--compile")
        check_choice(self.frontend, FRONTENDS, "--frontend")
        parse_part(self.part)

    @property
    def encoder_config(self) -> EncoderConfig:
        return EncoderConfig(model_path=self.model_path, device=self.device, dtype=self.dtype,
                             long_policy=self.long_policy, config_overrides=dict(self.encoder_overrides),
                             name=self.name, layers=self.layers, frames_layer=self.frames_layer,
                             trust_checkpoint=self.trust_checkpoint, compile=self.compile, frontend=self.frontend)


def parse_part(part: str | None) -> tuple[int, int]:
    """'I/N' -> (I, N); None -> (0, 1)."""
    if not part:
        return 0, 1
    try:
        i, n = (int(v) for v in part.split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise ValueError(f"--part {part!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return i, n
