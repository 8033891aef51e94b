"""The encoder interface every model implements, and the length-sorted batcher."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from emocache.config import DTYPES, LONG_POLICIES, EncoderConfig



class EncoderError(RuntimeError):
    """An encoder cannot be built or loaded; the message says what was looked for and how to fix it."""


class UtteranceError(ValueError):
    """One utterance cannot be encoded (recorded in the store; the run goes on)."""


@dataclass
class Encoded:
    """One batch's output: each utterance's valid frames, and their pooled vectors in float32."""

    frames: list[np.ndarray]
    """Per utterance (T_i, D_frames), float32."""
    pooled: np.ndarray
    """(B, D) float32."""
    layers: np.ndarray | None = None
    """(B, L, D) float32: pooled vectors of the chosen hidden-state layers (``--layers``), None for last only."""


class Ticks:
    """Utterances of one batch that an encoder reports done itself, passed on to a progress callback and capped
    at the batch's size (the runner reports the rest when the batch ends)."""

    def __init__(self, report: Callable[[int], None] | None, n: int):
        self.report, self.n, self.done = report, n, 0

    def __call__(self, k: int = 1) -> None:
        k = min(k, self.n - self.done)
        if k > 0 and self.report is not None:
            self.done += k
            self.report(k)

    def rest(self) -> int:
        """Utterances of the batch not reported yet."""
        return self.n - self.done


class Encoder(ABC):
    """A frozen feature extractor.

    Subclasses set the class attributes and implement :meth:`forward`; :meth:`prepare` adds windowing of long
    inputs, :meth:`submit` masked mean pooling in float32 on the device and the copies to host memory.
    """

    name: str = ""
    sample_rate: int = 16000
    frame_rate: float = 50.0
    """Output frames per second."""
    max_seconds: float | None = None
    """Longest input the model takes in one pass (None: unbounded)."""
    min_samples: int = 400
    """Shortest input that yields a frame (25 ms at 16 kHz)."""
    fixed_window: bool = False
    """Every window is padded to ``max_seconds`` whatever its length (Whisper)."""
    layer: str = "last"
    pooling: str = "mean"
    has_weights: bool = False
    """Neural encoders load weights (and take every --dtype); weight-free ones compute in float32."""
    dtypes: tuple[str, ...] = ("auto", "fp32")
    """The --dtype values this encoder takes."""
    gpu_batch_seconds: float = 480.0
    """Padded audio per batch on CUDA when the run does not set one (ours: fits the full-size models in well
    under 40 GB at bf16 and gives a large GPU enough work per launch)."""
    gpu_max_batch: int = 128
    """Most utterances per batch on CUDA when the run does not set it."""

    layer_ids: tuple[int, ...] = ()
    """hidden_states layers pooled besides the final output (``--layers``; empty: last only)."""
    frames_layer: int | None = None
    """hidden_states layer stored as frames (``--frames-layer``; None: the final output)."""
    ticks: Ticks | None = None
    """Progress of the batch being run (:meth:`report_to`); encoders that work one utterance at a time call
    :meth:`tick` after each, so slow ones (eGeMAPS) show progress within a batch."""

    def __init__(self, config: EncoderConfig | None = None):
        self.config = config or EncoderConfig()
        if self.config.long_policy not in LONG_POLICIES:
            raise EncoderError(f"long policy {self.config.long_policy!r}: use one of {', '.join(LONG_POLICIES)}")
        if self.config.dtype not in DTYPES:
            raise EncoderError(f"dtype {self.config.dtype!r}: use one of {', '.join(DTYPES)}")
        if self.config.dtype not in self.dtypes:
            raise EncoderError(f"--dtype {self.config.dtype}: {self.name} is weight-free and computes in float32; "
                               f"leave --dtype at auto (it takes {', '.join(self.dtypes)})")
        try:
            self.device = self.config.torch_device
        except ValueError as e:
            raise EncoderError(str(e)) from None
        if not self.has_weights:
            self.resolve_layers()

    # -- what subclasses provide -------------------------------------------------------------------------------
    @property
    @abstractmethod
    def dim(self) -> int:
        """Pooled dimension."""

    @property
    def frame_dim(self) -> int:
        """Frame feature dimension (equal to ``dim`` unless pooling is not a mean, e.g. eGeMAPS)."""
        return self.dim

    @abstractmethod
    def valid_frames(self, num_samples: int) -> int:
        """Number of output frames for an input of ``num_samples`` samples."""

    def frontend(self, waves: list[np.ndarray]) -> dict:
        """CPU-side input preparation (padding, filterbanks); runs in loader threads ahead of the model.

        The default pads waves into ``wave`` (B, N) float32 with ``num_samples`` (B,) int64.
        """
        return {"wave": self.pad_waves(waves), "num_samples": torch.tensor([w.size for w in waves])}

    def pad_waves(self, waves: list[np.ndarray], length: int | None = None) -> torch.Tensor:
        """Waves zero-padded into one (B, N) float32 tensor (N: ``length`` or the longest), page-locked when the
        encoder runs on CUDA, so the model thread's copy to the device does not wait."""
        n = length or max(w.size for w in waves)
        x = torch.zeros(len(waves), n, dtype=torch.float32, pin_memory=self.device.type == "cuda")
        for i, w in enumerate(waves):
            x[i, : w.size] = torch.from_numpy(np.ascontiguousarray(w[:n], dtype=np.float32))
        return x

    @property
    def num_layers(self) -> int | None:
        """Transformer layers L (hidden_states 0..L) when the encoder exposes them, else None (``--layers last``
        only)."""
        return None

    @property
    def wants_hidden(self) -> bool:
        """Whether :meth:`forward` must also return every hidden state (``--layers`` / ``--frames-layer``)."""
        return bool(self.layer_ids) or self.frames_layer is not None

    def resolve_layers(self) -> None:
        """Set :attr:`layer_ids` and :attr:`frames_layer` from the config (call once the model is built)."""
        spec, fl = self.config.layers, self.config.frames_layer
        if spec == "last" and fl is None:
            return
        L = self.num_layers
        if L is None:
            raise EncoderError(f"--layers {spec} / --frames-layer: {self.name} does not expose per-layer outputs; "
                               "use --layers last without --frames-layer")
        self.layer_ids = parse_layers(spec, L)
        if fl is not None and not 0 <= fl <= L:
            raise EncoderError(f"--frames-layer {fl}: {self.name} has hidden_states 0..{L}")
        self.frames_layer = fl

    def forward(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the model on the frontend's output (tensors may still be on the CPU) -> frames (B, T, D), lengths (B,).
        When :attr:`wants_hidden`, a third item: every hidden state (L + 1 tensors (B, T, D)).

        Every encoder implements this, unless it overrides :meth:`submit` itself (eGeMAPS, whose pooled vector is
        not a mean of its frames)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither forward nor run")

    def weights_identity(self) -> dict:
        """Provenance of the weights: repo id + revision, or sha256 of the weight files."""
        return {"weights": "none"}

    @property
    def dtype_name(self) -> str:
        return "fp32"

    # -- shared machinery -------------------------------------------------------------------------------------
    def report_to(self, report: Callable[[int], None] | None, n: int) -> Ticks:
        """Before running a batch of ``n`` utterances: where :meth:`tick` reports them (None: nowhere)."""
        self.ticks = Ticks(report, n)
        return self.ticks

    def tick(self, k: int = 1) -> None:
        """``k`` more utterances of the running batch are done (progress; a no-op outside :meth:`report_to`)."""
        if self.ticks is not None:
            self.ticks(k)

    def provenance(self) -> dict:
        return {
            "model": self.name, **self.weights_identity(),
            "layer": self.layer if self.frames_layer is None else f"hidden_states[{self.frames_layer}]", "pooling": self.pooling,
            "sample_rate": self.sample_rate, "frame_rate": self.frame_rate, "dim": self.dim,
            "frame_dim": self.frame_dim, "compute_dtype": self.dtype_name,
            "long_policy": self.config.long_policy if self.max_seconds else "none",
            "max_seconds": self.max_seconds,
            **({"layers": list(self.layer_ids)} if self.layer_ids else {}),
        }

    @property
    def max_samples(self) -> int | None:
        return int(self.max_seconds * self.sample_rate) if self.max_seconds else None

    def check(self, wave: np.ndarray) -> None:
        """Per-utterance checks before encoding; raises :class:`UtteranceError`."""
        if wave.size < self.min_samples:
            raise UtteranceError(f"audio too short: {wave.size} samples ({1000 * wave.size / self.sample_rate:.1f} ms)"
                                 f"; {self.name} needs at least {self.min_samples} "
                                 f"({1000 * self.min_samples / self.sample_rate:.0f} ms)")
        if not np.isfinite(wave).all():
            raise UtteranceError("audio has NaN or Inf samples; fix or drop the file")
        m = self.max_samples
        if m and wave.size > m and self.config.long_policy == "skip":
            raise UtteranceError(f"audio longer than {self.max_seconds:g} s ({wave.size / self.sample_rate:.1f} s) "
                                 "skipped by --long-policy skip; use window or truncate to keep it")

    def batch_cost(self, num_samples: int) -> int:
        """Padded samples an input of ``num_samples`` costs in a batch (the unit of the batch budget)."""
        m = self.max_samples
        if not m:
            return num_samples
        n_windows = 1 if self.config.long_policy == "truncate" else max(1, ceil_div(num_samples, m))
        return n_windows * (m if self.fixed_window else min(num_samples, m))

    def windows(self, wave: np.ndarray) -> list[np.ndarray]:
        """Split per the long-utterance policy (no-op when the wave fits)."""
        m = self.max_samples
        if not m or wave.size <= m:
            return [wave]
        if self.config.long_policy == "truncate":
            return [wave[:m]]
        pieces = [wave[i:i + m] for i in range(0, wave.size, m)]
        if len(pieces) > 1 and pieces[-1].size < self.min_samples:  # a sliver too short to encode joins nothing
            pieces = pieces[:-1]
        return pieces

    def prepare(self, waves: list[np.ndarray]) -> tuple[dict, list[int]]:
        """Window long waves and run the frontend: (inputs, owner) where owner[j] is the wave of piece j."""
        pieces, owner = [], []
        for i, w in enumerate(waves):
            for p in self.windows(w):
                pieces.append(p)
                owner.append(i)
        return self.frontend(pieces), owner

    def submit(self, inputs: dict, owner: list[int], frames: bool = True) -> "Pending":
        """Queue the model on prepared inputs and return at once: pooling runs on the device, the pooled vectors
        (and, with ``frames``, the valid frames) are copied to page-locked host memory on a side stream, so the
        caller can submit the next batch before :meth:`Pending.result` waits for this one. Frames of a wave's
        windows are concatenated before pooling."""
        with torch.inference_mode():
            out = self.forward(inputs)
            hidden = out[2] if self.wants_hidden else None  # L + 1 of (P, T, D)
            return self.reduce(out[0], [int(v) for v in out[1]], owner, hidden, frames)

    def run(self, inputs: dict, owner: list[int]) -> Encoded:
        """Model forward on prepared inputs, waiting for the result (:meth:`submit` without the overlap)."""
        return self.submit(inputs, owner).result()

    def encode(self, waves: list[np.ndarray]) -> Encoded:
        """Encode a batch of mono float32 waves at ``sample_rate``."""
        return self.run(*self.prepare(waves))

    def reduce(self, x: torch.Tensor, lengths: list[int], owner: list[int], hidden=None,
               frames: bool = True) -> "Pending":
        """Means over each utterance's valid frames on ``x``'s device (accumulated in float64, returned as float32;
        windows of one wave pooled together), then the copies to the host. ``x`` (P, T, D); ``lengths`` (P,)
        valid frames per window; ``owner[j]``: the wave of window j."""
        dev = x.device
        n_utt, t = max(owner) + 1, max(max(lengths), 1)
        counts = [0] * n_utt
        for j, i in enumerate(owner):
            counts[i] += lengths[j]
        meta = self.host_to_device(torch.tensor([[max(v, 1) - 1 for v in lengths], owner,
                                                 [int(v > 0) for v in lengths]], dtype=torch.long))  # (3, P)
        denom = self.host_to_device(torch.tensor(counts, dtype=torch.float64).clamp_min(1.0))  # (B,)
        simple = owner == list(range(len(owner)))

        def pool(h: torch.Tensor) -> torch.Tensor:  # (P, T, D) -> (B, D) float32
            # a running sum in float64, read at each window's last valid frame: what follows (padding, longer
            # batch-mates) cannot change it, so a padded batch gives each utterance exactly its alone result
            run = torch.cumsum(h[:, :t].double(), 1)  # (P, t, D)
            sums = torch.gather(run, 1, meta[0][:, None, None].expand(-1, 1, run.shape[2]))[:, 0]  # (P, D)
            sums = sums * meta[2][:, None]  # a window without frames adds nothing
            if not simple:
                sums = torch.zeros(n_utt, sums.shape[1], dtype=torch.float64, device=dev).index_add_(0, meta[1], sums)
            return (sums / denom[:, None]).float()

        pooled = pool(x)
        layers = torch.stack([pool(hidden[k]) for k in self.layer_ids], 1) if self.layer_ids else None  # (B, L, D)
        source = x if self.frames_layer is None else hidden[self.frames_layer]
        fr = source[:, :t].float() if frames else None  # (P, t, D)
        copies = HostCopies(dev, pooled, fr, layers)

        def finish() -> Encoded:
            pooled_h, fr_h, layers_h = copies.wait()
            per_utt: list[list[np.ndarray]] = [[] for _ in range(n_utt)]
            if fr_h is not None:
                for j, i in enumerate(owner):
                    per_utt[i].append(fr_h[j, : lengths[j]])
            cat = [np.concatenate(f, 0) if len(f) > 1 else (f[0] if f else None) for f in per_utt]
            return Encoded(frames=cat, pooled=pooled_h, layers=layers_h)

        return Pending(finish)

    def host_to_device(self, t: torch.Tensor) -> torch.Tensor:
        """A small host tensor on this encoder's device without waiting for the device (page-locked first)."""
        if self.device.type != "cuda":
            return t
        return t.pin_memory().to(self.device, non_blocking=True)


class Pending:
    """A submitted batch: :meth:`result` waits for its host copies and returns the :class:`Encoded`."""

    def __init__(self, finish):
        self._finish = finish

    def result(self) -> Encoded:
        return self._finish()


COPY_STREAMS: dict[torch.device, "torch.cuda.Stream"] = {}
"""One side stream per CUDA device for the copies to the host."""


class HostCopies:
    """Device tensors copied to page-locked host memory on a side stream that waits for the compute stream, so
    the copies overlap the next batch's compute; on the CPU the tensors are the results."""

    def __init__(self, dev: torch.device, *tensors: torch.Tensor | None):
        if dev.type != "cuda":
            self.event, self.host = None, tensors
            return
        side = COPY_STREAMS.get(dev)
        if side is None:
            side = COPY_STREAMS[dev] = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        host = []
        with torch.cuda.stream(side):
            for t in tensors:
                if t is None:
                    host.append(None)
                    continue
                h = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                h.copy_(t, non_blocking=True)
                t.record_stream(side)  # the allocator keeps t's memory until the copy is done
                host.append(h)
        self.event = torch.cuda.Event()
        self.event.record(side)
        self.host = tuple(host)

    def wait(self) -> tuple[np.ndarray | None, ...]:
        if self.event is not None:
            self.event.synchronize()
        return tuple(None if h is None else h.numpy() for h in self.host)


def parse_layers(spec: str, num_layers: int) -> tuple[int, ...]:
    """``last`` -> (), ``all`` -> (0, ..., L), ``K,K,...`` -> those hidden_states indices (sorted, unique)."""
    if spec == "last":
        return ()
    if spec == "all":
        return tuple(range(num_layers + 1))
    try:
        ks = sorted({int(k) for k in spec.split(",")})
    except ValueError:
        ks = [-1]
    if not ks or not all(0 <= k <= num_layers for k in ks):
        raise EncoderError(f"--layers {spec!r}: use last, all or comma-separated hidden_states indices 0..{num_layers}")
    return tuple(ks)


def batches_by_budget(lengths: list[int], budget: int, max_batch: int = 256) -> list[list[int]]:
    """Indices sorted by length, grouped so that ``len(batch) * max_len(batch) <= budget`` (padded cost)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = max(lengths[i], 1)
        if cur and ((len(cur) + 1) * longest > budget or len(cur) >= max_batch):
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out


def ceil_div(a: int, b: int) -> int:
    return -(-a // b) if a > 0 else 0


def conv_frames(n: int, kernel: int, stride: int) -> int:
    return max(0, (n - kernel) // stride + 1)


def conv_stack_frames(n: int, layers) -> int:
    """Output length of a stack of unpadded 1-d convolutions given as (kernel, stride) pairs."""
    for kernel, stride in layers:
        n = conv_frames(n, kernel, stride)
    return n
