"""egemaps: openSMILE eGeMAPSv02 low-level descriptors as frames (25 x 100 Hz), functionals (88) as pooled."""

from __future__ import annotations

import warnings

import numpy as np

from emocache.config import EncoderConfig
from emocache.encoders.base import Encoded, Encoder, EncoderError, Pending
from emocache.encoders.registry import register


@register
class EGeMAPS(Encoder):
    """The extended Geneva minimalistic acoustic parameter set, via the ``opensmile`` package (optional extra)."""

    name = "egemaps"
    sample_rate = 16000
    frame_rate = 100.0
    min_samples = 800
    pooling = "eGeMAPSv02 functionals"

    def __init__(self, config: EncoderConfig | None = None):
        super().__init__(config)
        try:
            import opensmile
        except ImportError:
            raise EncoderError("egemaps needs openSMILE: pip install 'emocache[egemaps]' (or pip install opensmile)"
                               ) from None
        self._version = opensmile.__version__
        fs = opensmile.FeatureSet.eGeMAPSv02
        self.lld = opensmile.Smile(feature_set=fs, feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
        self.func = opensmile.Smile(feature_set=fs, feature_level=opensmile.FeatureLevel.Functionals)

    @property
    def dim(self) -> int:
        return len(self.func.feature_names)

    @property
    def frame_dim(self) -> int:
        return len(self.lld.feature_names)

    def valid_frames(self, num_samples: int) -> int:
        return max(1, (num_samples - 800) // 160 + 1)

    def weights_identity(self) -> dict:
        return {"weights": f"none (openSMILE {self._version} eGeMAPSv02)"}

    def frontend(self, waves: list[np.ndarray]) -> dict:
        return {"waves": waves}  # openSMILE reads each wave as it is: no padding

    def _process(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # openSMILE warns about short segments; checked before encoding
            lld = self.lld.process_signal(w, self.sample_rate).to_numpy(np.float32)  # (T, 25)
            func = self.func.process_signal(w, self.sample_rate).to_numpy(np.float32)[0]  # (88,)
        return lld, func

    def submit(self, inputs: dict, owner: list[int], frames: bool = True) -> Pending:
        """Frames = descriptors, pooled = eGeMAPS functionals (not a mean of the frames); computed at once."""
        out = []
        for w in inputs["waves"]:  # openSMILE runs one wave at a time: progress per utterance
            out.append(self._process(w))
            self.tick()
        done = Encoded(frames=[f for f, _ in out], pooled=np.stack([p for _, p in out]))
        return Pending(lambda: done)
