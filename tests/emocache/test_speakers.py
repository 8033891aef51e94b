"""Speaker ids: the manifest's speaker field, per-dataset key rules (keys in the EmoBox formats), patterns."""

from __future__ import annotations

import pytest

from emocache.speakers import SpeakerError, speaker_ids

KEYS = {  # dataset: (keys in its EmoBox format, their speakers)
    "emodb": (["emodb-03a01Wa", "emodb-16b10Td"], ["03", "16"]),
    "iemocap": (["iemocap-Ses01F_impro04_F000", "iemocap-Ses01F_impro04_M003", "iemocap-Ses05M_script01_1_F012"],
                ["Ses01F", "Ses01M", "Ses05F"]),
    "casia": (["casia-239-wangzhe-neutral", "casia-12-liuchanhg-angry"], ["wangzhe", "liuchanhg"]),
    "cafe": (["cafe-12-P-2-5", "cafe-01-N-1"], ["12", "01"]),
    "urdu": (["urdu-SM20_F8_N012", "urdu-SF1_F3_A01"], ["SM20", "SF1"]),
}


@pytest.mark.parametrize("dataset", sorted(KEYS))
def test_dataset_rules(dataset):
    keys, want = KEYS[dataset]
    assert speaker_ids([{"key": k} for k in keys], dataset) == want


def test_speaker_field_wins_and_patterns():
    rows = [{"key": "emodb-03a01Wa", "speaker": "x"}, {"key": "emodb-16b10Td", "speaker": 7}]
    assert speaker_ids(rows, "emodb") == ["x", "7"]
    rows = [{"key": "mine-spk3-001"}, {"key": "mine-spk12-002"}]
    assert speaker_ids(rows, "mine", pattern=r"mine-(?P<speaker>spk\d+)-\d+") == ["spk3", "spk12"]


def test_errors_name_the_option_and_the_key():
    with pytest.raises(SpeakerError, match="dataset meld: .*--speaker-pattern"):
        speaker_ids([{"key": "meld-dia0_utt0-train"}], "meld")
    with pytest.raises(SpeakerError, match="key 'emodb-bad' does not match the emodb rule"):
        speaker_ids([{"key": "emodb-03a01Wa"}, {"key": "emodb-bad"}], "emodb")
    with pytest.raises(SpeakerError, match="not a regular expression"):
        speaker_ids([{"key": "a"}], "x", pattern="(")
