"""Speaker ids of manifest rows: the ``speaker`` field when every row has one, else a pattern on the keys.

EmoBox manifests carry no speaker field, but several datasets' keys name the speaker. :data:`KEY_RULES` holds
our per-dataset rules (checked against the real EmoBox keys); the speaker id is the pattern's ``speaker`` group,
or, without one, its captured groups joined (IEMOCAP: session + the utterance speaker's gender letter). Any
other dataset needs a pattern given by the user (``--speaker-pattern``, the same regex form ``emocache manifest
--speaker-pattern`` takes); a dataset whose keys do not name the speaker (e.g. MELD) needs a ``speaker`` field.
"""

from __future__ import annotations

import re

KEY_RULES: dict[str, str] = {
    "emodb": r"emodb-(?P<speaker>\d\d)[a-z]\d\d[A-Z][a-z]",
    # emodb-03a01Wa: speaker 03 (two digits), then text code, emotion letter, version
    "iemocap": r"iemocap-(Ses\d\d)[FM]_.+_([FM])\d+",
    # iemocap-Ses01F_impro04_M000: Ses01 + M (the speaking actor; F/M after Ses01 is the dialogue's first actor)
    "casia": r"casia-\d+-(?P<speaker>[a-z]+)-[a-z]+",
    # casia-239-wangzhe-neutral: the actor's name
    "cafe": r"cafe-(?P<speaker>\d\d)-.+",
    # cafe-12-P-2-5: actor 12
    "urdu": r"urdu-(?P<speaker>S[FM]\d+)_.+",
    # urdu-SM20_F8_N012: speaker SM20 (S, gender, number)
}
"""Dataset -> regex on the manifest key (full match) giving the speaker (ours, from the EmoBox key formats)."""


class SpeakerError(ValueError):
    """Speakers cannot be told for a dataset or a row; the message names the key and the fix."""


def compile_speaker_pattern(pattern: str, error: type[Exception]) -> re.Pattern:
    """``pattern`` compiled, or ``error`` naming --speaker-pattern when it is not a regular expression."""
    try:
        return re.compile(pattern)
    except re.error as e:
        raise error(f"--speaker-pattern {pattern!r}: not a regular expression ({e})") from None


def speaker_from_key(key: str, pattern: str | re.Pattern) -> str | None:
    """The speaker a full match of ``pattern`` on ``key`` gives (group ``speaker``, else the groups joined)."""
    m = re.fullmatch(pattern, key)
    if m is None:
        return None
    if "speaker" in m.re.groupindex:
        return m.group("speaker")
    return "".join(g for g in m.groups() if g) or None


def speaker_ids(rows: list[dict], dataset: str, pattern: str | None = None) -> list[str]:
    """One speaker id per manifest row (dicts with ``key``, maybe ``speaker``), in order.

    The ``speaker`` field when every row has one; else ``pattern`` (a regex fully matching each key); else the
    dataset's rule in :data:`KEY_RULES`. Raises :class:`SpeakerError` naming the option for a dataset with no
    rule, and naming the key for a key the pattern does not match.
    """
    if rows and all(isinstance(r.get("speaker"), (str, int)) and str(r["speaker"]) for r in rows):
        return [str(r["speaker"]) for r in rows]
    rule = pattern or KEY_RULES.get(dataset)
    if rule is None:
        raise SpeakerError(f"dataset {dataset}: the manifest has no 'speaker' field and emocache has no rule for its "
                           f"keys (rules: {', '.join(sorted(KEY_RULES))}); pass --speaker-pattern REGEX with a "
                           "(?P<speaker>...) group matching the whole key, or add a 'speaker' field")
    compiled = compile_speaker_pattern(rule, SpeakerError)
    out = []
    for r in rows:
        spk = speaker_from_key(str(r["key"]), compiled)
        if spk is None:
            how = "--speaker-pattern" if pattern else f"the {dataset} rule {rule!r}"
            raise SpeakerError(f"dataset {dataset}: key {r['key']!r} does not match {how}; fix the pattern "
                               "(--speaker-pattern) or add a 'speaker' field to the manifest")
        out.append(spk)
    return out
