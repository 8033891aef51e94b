"""The encoder registry: a plain dict from model name to class, filled by the :func:`register` decorator.

Built-in encoder modules register their classes when :mod:`emocache.encoders` imports them (they import their
heavy libraries inside methods, so registering costs only torch). Encoders from other packages register
through the entry-point group ``emocache.encoders``: each entry point names a module (whose classes use
``@register``) or an :class:`~emocache.encoders.base.Encoder` subclass, e.g. in the plugin's pyproject.toml::

    [project.entry-points."emocache.encoders"]
    my-encoder = "my_package.encoder:MyEncoder"
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from importlib import metadata

from emocache.config import EncoderConfig
from emocache.encoders.base import Encoder, EncoderError
from emocache.suggest import did_you_mean

REGISTRY: dict[str, type[Encoder]] = {}
PREFIXES: dict[str, Callable[[str], type[Encoder]]] = {}
"""Model-name prefixes (``hf:``) mapped to a function from the rest of the name to an encoder class."""
PLUGIN_GROUP = "emocache.encoders"


def register(cls: type[Encoder]) -> type[Encoder]:
    """Class decorator: add ``cls`` to :data:`REGISTRY` under ``cls.name``."""
    if not cls.name:
        raise EncoderError(f"{cls.__qualname__}: set the class attribute `name` before registering it")
    known = REGISTRY.get(cls.name)
    if known is not None and known is not cls:
        raise EncoderError(f"model name {cls.name!r} is taken by {known.__module__}.{known.__qualname__}; "
                           f"give {cls.__module__}.{cls.__qualname__} another name")
    REGISTRY[cls.name] = cls
    return cls


def load_plugins() -> list[str]:
    """Import the ``emocache.encoders`` entry points; returns the names they added. A plugin that fails to load
    is a warning naming it, never a failure of emocache."""
    before = set(REGISTRY)
    for ep in metadata.entry_points(group=PLUGIN_GROUP):
        try:
            obj = ep.load()
            if isinstance(obj, type) and issubclass(obj, Encoder) and obj.name not in REGISTRY:
                register(obj)
        except Exception as e:  # a broken plugin must not take the built-in encoders down with it
            warnings.warn(f"emocache encoder plugin {ep.name!r} ({ep.value}) failed to load: "
                          f"{type(e).__name__}: {e}", stacklevel=2)
    return sorted(set(REGISTRY) - before)


def names() -> list[str]:
    """Registered model names, sorted."""
    return sorted(REGISTRY)


def neural_models() -> tuple[str, ...]:
    """Registered encoders with weights (what tests build tiny random versions of), sorted."""
    return tuple(n for n in names() if REGISTRY[n].has_weights)


def encoder_class(name: str) -> type[Encoder]:
    """The class registered under ``name``; an unknown name suggests the closest known one and lists them all."""
    prefix, sep, rest = name.partition(":")
    if name not in REGISTRY and sep and prefix in PREFIXES:
        return PREFIXES[prefix](rest)
    if name not in REGISTRY:
        raise EncoderError(f"unknown model {name!r}; {did_you_mean(name, names())}known models: "
                           f"{', '.join(names())}, or {', '.join(p + ':<id>' for p in sorted(PREFIXES))}")
    return REGISTRY[name]


def build_encoder(name: str, config: EncoderConfig | None = None) -> Encoder:
    """Build (and load) the encoder registered under ``name``."""
    return encoder_class(name)(config or EncoderConfig())
