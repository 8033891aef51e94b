"""The emotion wheel's similarity matrix against values computed by hand."""

import json
import math

import numpy as np
import pytest

from trainer.emotion_space import place, similarity_matrix

C45 = (1 + math.cos(math.radians(45))) / 2  # 0.8536: neighbours on the wheel


def test_six_classes_by_hand():
    S = similarity_matrix(("Neutral", "Angry", "Surprise", "Sad", "Happy", "Fear"))
    # angles: anger 270, surprise 135, sadness 180, joy 0, fear 90; neutral at the centre
    assert S.shape == (6, 6) and np.allclose(np.diag(S), 1)
    assert np.allclose(S, S.T)
    assert S[0, 1:].tolist() == [0.5] * 5  # neutral vs every emotion
    assert S[1, 4] == pytest.approx(0.5)  # anger 270 vs joy 0: 90 degrees apart
    assert S[1, 5] == pytest.approx(0.0, abs=1e-12)  # anger 270 vs fear 90: opposites
    assert S[2, 3] == pytest.approx(C45)  # surprise 135 vs sadness 180
    assert S[3, 4] == pytest.approx(0.0, abs=1e-12)  # sadness vs joy: opposites
    assert S[2, 4] == pytest.approx((1 + math.cos(math.radians(135))) / 2)  # 0.1464


def test_aliases_intensities_and_dyads():
    assert place("HAPPY") == place("joy") == place("Excited") == 0
    assert place("Boredom") == 225  # Plutchik's mild disgust
    assert place("contempt") == 247.5  # disgust + anger
    assert place("optimism") == 337.5  # anticipation + joy wraps around
    assert place("neutral") is None and place("Calm") is None


def test_unplaceable_class_is_named_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"'Frustrated'.*--similarity FILE"):
        similarity_matrix(("Angry", "Frustrated"))
    f = tmp_path / "sim.json"
    f.write_text(json.dumps({"angles": {"Frustrated": 225}, "neutral": ["Other"], "neutral_similarity": 0.25}))
    S = similarity_matrix(("Angry", "Frustrated", "Other"), f)
    assert S[0, 1] == pytest.approx(C45) and S[2, 0] == S[2, 1] == 0.25 and S[2, 2] == 1
    f.write_text(json.dumps({"aliases": {"Frustrated": "rage"}}))
    with pytest.raises(ValueError, match=r"aliases\['Frustrated'\].*one of joy"):
        similarity_matrix(("Angry", "Frustrated"), f)


def test_run_similarity_warns_once_for_the_metric_and_refuses_for_the_rewards(base_kw):
    from trainer.config import TrainConfig
    from trainer.experiment import DataError, similarity

    with pytest.warns(UserWarning, match="wheel metric is NaN.*'Frustrated'"):
        assert similarity(TrainConfig(method="baseline", **base_kw), ("Angry", "Frustrated")) is None
    with pytest.raises(DataError, match="--reward eswr.*'Frustrated'"):
        similarity(TrainConfig(method="grpo", reward="eswr", teacher="t", **base_kw), ("Angry", "Frustrated"))


def test_similarity_is_one_only_for_identity_and_ties_are_near_misses(tmp_path):
    from trainer.emotion_space import TIE_SIMILARITY, ties
    from trainer.metrics import scores
    from trainer.rewards import eswr

    emodb = ("Angry", "Boredom", "Disgust", "Fear", "Happy", "Neutral", "Sad")  # EmoBox emodb's classes
    S = similarity_matrix(emodb)
    assert TIE_SIMILARITY == pytest.approx(C45) and S[1, 2] == S[2, 1] == pytest.approx(C45)  # both at 225
    assert np.allclose(np.diag(S), 1) and (S[~np.eye(len(emodb), dtype=bool)] < 1).all()
    ravdess = ("Angry", "Calm", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")
    R = similarity_matrix(ravdess)
    assert R[1, 5] == pytest.approx(C45) and (R[~np.eye(len(ravdess), dtype=bool)] < 1).all()  # both centre
    assert ties(emodb) == [("Boredom", "Disgust")] and ties(ravdess) == [("Calm", "Neutral")]
    # confusing boredom with disgust is a near miss in the wheel metric and in eswr, not a correct answer
    y, pred = np.array([1, 1]), np.array([2, 1])
    assert scores(y, pred, S)["wheel"] == pytest.approx((C45 + 1) / 2)
    import torch

    p = torch.tensor([[0.0, 0.0, 1.0, 0, 0, 0, 0]])  # answers Disgust
    p_t = torch.tensor([[0.0, 1.0, 0.0, 0, 0, 0, 0]])  # teacher says Boredom
    assert eswr(p, p_t, torch.as_tensor(S)).item() == pytest.approx(0.5 * C45)
    f = tmp_path / "sim.json"
    f.write_text(json.dumps({"tie_similarity": 0.9}))
    assert similarity_matrix(emodb, f)[1, 2] == pytest.approx(0.9)
    f.write_text(json.dumps({"tie_similarity": 1}))
    with pytest.raises(ValueError, match="tie_similarity 1 must be a number in \\[0, 1\\)"):
        similarity_matrix(emodb, f)
