"""Encoder registry: a plain dict from model name to the class that builds it (imported lazily)."""

from __future__ import annotations

import importlib

from emocache.encoders.base import (Encoded, Encoder, EncoderConfig, EncoderError, UtteranceError,
                                    batches_by_budget)

REGISTRY: dict[str, str] = {
    "fbank-stats": "emocache.encoders.fbank:FbankStats",
    "egemaps": "emocache.encoders.egemaps:EGeMAPS",
    "whisper-large-v3": "emocache.encoders.whisper:WhisperLargeV3",
    "wavlm-large": "emocache.encoders.wavlm:WavLMLarge",
    "wavlm-base-plus": "emocache.encoders.wavlm:WavLMBasePlus",
    "emotion2vec-base": "emocache.encoders.emotion2vec:Emotion2vecBase",
    "emotion2vec-plus-large": "emocache.encoders.emotion2vec:Emotion2vecPlusLarge",
    "sensevoice-small": "emocache.encoders.sensevoice:SenseVoiceSmall",
}


def encoder_class(name: str) -> type[Encoder]:
    """The class registered under ``name``; an unknown name lists the known ones."""
    if name not in REGISTRY:
        raise EncoderError(f"unknown model {name!r}; known models: {', '.join(sorted(REGISTRY))}")
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def build_encoder(name: str, config: EncoderConfig | None = None) -> Encoder:
    """Build (and load) the encoder registered under ``name``."""
    return encoder_class(name)(config or EncoderConfig())


__all__ = ["REGISTRY", "Encoded", "Encoder", "EncoderConfig", "EncoderError", "UtteranceError",
           "batches_by_budget", "build_encoder", "encoder_class"]
