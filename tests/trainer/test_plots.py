"""curves.png: the stage-2 algorithms' own curves (approx_kl, clip_frac, sup_loss, mask_rate) get a third row."""

from PIL import Image

from trainer.plots import plot_curves


def _curves(extra: dict) -> list[dict]:
    return [{"fold": 1, "seed": 0, "stage": "b-grpo", "epoch": e, "loss": 1.0 / e, "reward": 0.5,
             "confidence": 0.7, "test_macro_f1": 0.5, **extra} for e in (1, 2, 3)]


def test_third_row_only_when_a_run_logs_algorithm_curves(tmp_path):
    plain = Image.open(plot_curves(_curves({}), tmp_path / "a.png")).size
    extra = Image.open(plot_curves(_curves({"approx_kl": 0.0, "clip_frac": 0.0}), tmp_path / "b.png")).size
    assert extra[0] == plain[0] and extra[1] > plain[1] * 1.4
