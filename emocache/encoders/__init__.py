"""Speech encoders: each module registers its classes with :func:`register`; :data:`REGISTRY` maps model names
to classes (built-in ones, then plugins from the ``emocache.encoders`` entry-point group)."""

from __future__ import annotations

from emocache.config import EncoderConfig
from emocache.encoders.base import Encoded, Encoder, EncoderError, UtteranceError, batches_by_budget
from emocache.encoders.registry import (REGISTRY, build_encoder, encoder_class, load_plugins, names, neural_models,
                                        register)
from emocache.encoders import egemaps, emotion2vec, fbank, hf, sensevoice, wavlm, whisper  # noqa: E402,F401  (register)

load_plugins()

__all__ = ["REGISTRY", "Encoded", "Encoder", "EncoderConfig", "EncoderError", "UtteranceError",
           "batches_by_budget", "build_encoder", "encoder_class", "load_plugins", "names", "neural_models",
           "register"]
