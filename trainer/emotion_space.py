"""Emotion similarity between class names, from Plutchik's wheel (for the eswr/wheel rewards and the wheel metric).

Plutchik (1980) places eight primary emotions on a circle at 45-degree steps: joy 0, trust 45, fear 90,
surprise 135, sadness 180, disgust 225, anger 270, anticipation 315 (opposites 180 degrees apart). Two placed
emotions at angles a, b get

    S(a, b) = (1 + cos(a - b)) / 2,

1 for the same emotion, 0.854 for neighbours, 0.5 at 90 degrees, 0 for opposites. Our choices, beside the wheel:

- **Neutral** is the wheel's centre, not a point on the circle: S(neutral, neutral) = 1 and S(neutral, e) =
  ``NEUTRAL_SIMILARITY`` = 0.5 for every placed emotion e (as far from each as two emotions 90 degrees apart).
- **Names** are matched case-insensitively through ``ALIASES``: EmoBox's and the six-class names (Happy -> joy,
  Angry -> anger, Sad -> sadness, Fear, Surprise, Disgust), common variants (happiness, excited, angry, fearful,
  ...), Plutchik's milder/stronger intensities of a primary (boredom and loathing -> disgust, annoyance and
  rage -> anger, serenity and ecstasy -> joy, ...) and his primary dyads at the midpoint of their two primaries
  (contempt = disgust + anger at 247.5, love = joy + trust at 22.5, ...). Calm is placed at the centre like
  neutral.
- **Ties**: S = 1 only for a class with itself. Two different classes placed at the same point (EmoDB's
  Boredom and Disgust both at disgust, 225 degrees; RAVDESS's Neutral and Calm both at the centre; two
  aliases of one primary) get ``TIE_SIMILARITY`` = 0.854, as close as wheel neighbours, so confusing them is a
  near miss, not a correct answer, in the wheel metric and in eswr/wheel rewards.
- A JSON file (``--similarity FILE``) extends or overrides the placement: ``{"angles": {"Frustrated": 260},
  "aliases": {"Excitement": "joy"}, "neutral": ["Calm"], "neutral_similarity": 0.5, "tie_similarity": 0.854}``
  (every key optional).

A class that cannot be placed is an error naming it and the fix.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

PLUTCHIK_ANGLES: dict[str, float] = {"joy": 0.0, "trust": 45.0, "fear": 90.0, "surprise": 135.0, "sadness": 180.0,
                                     "disgust": 225.0, "anger": 270.0, "anticipation": 315.0}
"""Plutchik's eight primary emotions and their angles on the wheel, in degrees."""

NEUTRAL_SIMILARITY = 0.5
"""Ours: similarity of a centre class (neutral, calm) to every emotion on the circle."""

TIE_SIMILARITY = (1 + math.cos(math.radians(45))) / 2
"""Ours: similarity of two different classes placed at the same point (as close as wheel neighbours, 0.854)."""

NEUTRAL_NAMES = ("neutral", "calm", "neu")
"""Names placed at the wheel's centre (calm: ours)."""

ALIASES: dict[str, str] = {
    # EmoBox / six-class names and common spellings
    "happy": "joy", "happiness": "joy", "hap": "joy", "excited": "joy", "excitement": "joy", "exc": "joy",
    "angry": "anger", "ang": "anger", "sad": "sadness", "fearful": "fear", "afraid": "fear",
    "surprised": "surprise", "sur": "surprise", "disgusted": "disgust", "dis": "disgust",
    # Plutchik's milder and stronger intensities of each primary
    "serenity": "joy", "ecstasy": "joy", "acceptance": "trust", "admiration": "trust",
    "apprehension": "fear", "terror": "fear", "distraction": "surprise", "amazement": "surprise",
    "pensiveness": "sadness", "grief": "sadness", "boredom": "disgust", "loathing": "disgust",
    "annoyance": "anger", "rage": "anger", "interest": "anticipation", "vigilance": "anticipation",
}
"""Lower-case class name -> primary emotion of ``PLUTCHIK_ANGLES``."""

DYADS: dict[str, tuple[str, str]] = {
    "love": ("joy", "trust"), "submission": ("trust", "fear"), "awe": ("fear", "surprise"),
    "disapproval": ("surprise", "sadness"), "remorse": ("sadness", "disgust"), "contempt": ("disgust", "anger"),
    "aggressiveness": ("anger", "anticipation"), "optimism": ("anticipation", "joy"),
}
"""Plutchik's primary dyads, placed at the midpoint of their two neighbouring primaries."""


def _midpoint(a: str, b: str) -> float:
    """Angle halfway between two neighbouring primaries (anticipation-joy wraps to 337.5)."""
    x, y = PLUTCHIK_ANGLES[a], PLUTCHIK_ANGLES[b]
    return (x + y) / 2 if abs(x - y) <= 180 else ((x + y + 360) / 2) % 360


SIMILARITY_BYTES = 1 << 20
"""Largest --similarity file (a few hundred class names fit in a few KiB)."""


def load_similarity_file(path: str | Path) -> dict:
    """Read and check a --similarity JSON file: a regular file of at most SIMILARITY_BYTES, depth-bounded
    (:mod:`emocache.inputs`), then the schema ``{"angles": {name: finite degrees}, "aliases": {name: primary},
    "neutral": [names], "neutral_similarity": number in [0, 1], "tie_similarity": number in [0, 1)}`` (every key
    optional; names are strings of at most the label limit). A ValueError names the file and the key."""
    from emocache.inputs import LIMITS, InputError, finite_number, load_json

    path = Path(path)
    where = f"--similarity {path}"
    try:
        spec = load_json(path, "--similarity", max_bytes=SIMILARITY_BYTES, max_depth=4)
    except InputError as e:
        raise ValueError(str(e)) from None
    keys = ("angles", "aliases", "neutral", "neutral_similarity", "tie_similarity")
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: expected an object with keys {', '.join(keys)}; got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(keys))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected {', '.join(keys)}")

    def names(values, key: str):
        for name in values:
            if not isinstance(name, str) or not name or len(name.encode()) > LIMITS.label_bytes:
                raise ValueError(f"{where}: {key} holds {str(name)[:40]!r}; class names are non-empty strings of at "
                                 f"most {LIMITS.label_bytes} bytes")

    for key, example in (("angles", '{"Frustrated": 260}'), ("aliases", '{"Excitement": "joy"}')):
        if key in spec and not isinstance(spec[key], dict):
            raise ValueError(f"{where}: {key} must be an object like {example}, not a {type(spec[key]).__name__}")
    if "neutral" in spec and not isinstance(spec["neutral"], list):
        raise ValueError(f"{where}: neutral must be a list of class names like [\"Calm\"], not a "
                         f"{type(spec['neutral']).__name__}")
    names(spec.get("angles", {}), "angles")
    names(spec.get("aliases", {}), "aliases")
    names(spec.get("neutral", []), "neutral")
    for name, angle in spec.get("angles", {}).items():
        if not finite_number(angle):
            raise ValueError(f"{where}: angles[{name!r}] = {angle!r} is not a number of degrees")
    for name, target in spec.get("aliases", {}).items():
        if not isinstance(target, str) or target.lower() not in PLUTCHIK_ANGLES:
            raise ValueError(f"{where}: aliases[{name!r}] = {str(target)[:40]!r}; an alias names one of "
                             f"{', '.join(PLUTCHIK_ANGLES)}")
    ns = spec.get("neutral_similarity", NEUTRAL_SIMILARITY)
    if not finite_number(ns) or not 0 <= ns <= 1:
        raise ValueError(f"{where}: neutral_similarity {ns!r} must be a number in [0, 1]")
    ts = spec.get("tie_similarity", TIE_SIMILARITY)
    if not finite_number(ts) or not 0 <= ts < 1:
        raise ValueError(f"{where}: tie_similarity {ts!r} must be a number in [0, 1) (1 is a class with itself)")
    return spec


def place(name: str, spec: dict | None = None) -> float | None:
    """Angle in degrees of class ``name`` on the wheel, None for a centre (neutral) class; KeyError if unplaceable."""
    spec = spec or {}
    angles = {k.lower(): float(v) for k, v in spec.get("angles", {}).items()}
    aliases = {k.lower(): str(v).lower() for k, v in spec.get("aliases", {}).items()}
    key = name.lower()
    if key in {n.lower() for n in spec.get("neutral", ())}:
        return None
    if key in angles:
        return angles[key] % 360
    if key in aliases:
        return PLUTCHIK_ANGLES[aliases[key]]
    if key in NEUTRAL_NAMES:
        return None
    if key in PLUTCHIK_ANGLES:
        return PLUTCHIK_ANGLES[key]
    if key in ALIASES:
        return PLUTCHIK_ANGLES[ALIASES[key]]
    if key in DYADS:
        return _midpoint(*DYADS[key])
    raise KeyError(name)


def similarity_matrix(classes: tuple[str, ...] | list[str], spec: dict | str | Path | None = None) -> np.ndarray:
    """S (C, C) float64 for ``classes``: S[i, j] = (1 + cos(angle_i - angle_j)) / 2; a centre class scores
    ``neutral_similarity`` with every class on the circle; two different classes at the same point (same angle, or
    both at the centre) score ``tie_similarity``; only S[i, i] is 1. ``spec``: a --similarity dict or JSON
    path."""
    if isinstance(spec, (str, Path)):
        spec = load_similarity_file(spec) if str(spec) else None
    angles, missing = [], []
    for c in classes:
        try:
            angles.append(place(c, spec))
        except KeyError:
            missing.append(c)
    if missing:
        raise ValueError(f"cannot place class(es) {', '.join(map(repr, missing))} on Plutchik's emotion wheel; give "
                         "--similarity FILE with e.g. "
                         + json.dumps({"angles": {missing[0]: 270}}) + " or "
                         + json.dumps({"aliases": {missing[0]: "anger"}}) + " or "
                         + json.dumps({"neutral": [missing[0]]}))
    ns = float((spec or {}).get("neutral_similarity", NEUTRAL_SIMILARITY))
    ts = float((spec or {}).get("tie_similarity", TIE_SIMILARITY))
    n = len(classes)
    S = np.empty((n, n))
    for i, a in enumerate(angles):
        for j, b in enumerate(angles):
            if i == j:
                S[i, j] = 1.0
            elif a is None or b is None:
                S[i, j] = ts if (a is None and b is None) else ns
            elif (a - b) % 360 == 0:
                S[i, j] = ts
            else:
                S[i, j] = (1 + math.cos(math.radians(a - b))) / 2
    return S


def ties(classes: tuple[str, ...] | list[str], spec: dict | str | Path | None = None) -> list[tuple[str, str]]:
    """Pairs of different classes placed at the same point of the wheel (scored ``tie_similarity``)."""
    if isinstance(spec, (str, Path)):
        spec = load_similarity_file(spec) if str(spec) else None
    placed = [(c, place(c, spec)) for c in classes]
    return [(a, b) for i, (a, x) in enumerate(placed) for b, y in placed[i + 1:]
            if (x is None and y is None) or (x is not None and y is not None and (x - y) % 360 == 0)]


__all__ = ["PLUTCHIK_ANGLES", "NEUTRAL_SIMILARITY", "TIE_SIMILARITY", "ALIASES", "DYADS", "place",
           "similarity_matrix", "ties", "load_similarity_file"]
