"""Compatibility of run identities: the run folders (readable name + config hash) of representative
configurations, recorded with the trainer before the method registry (issue 24, commit 4f743df). The same settings
must keep the same config_hash and folder name, and the settings keep their order (results.csv columns)."""

import pytest

from trainer.config import TrainConfig

COMMON = dict(store="s", manifests="man", model="m", dataset="ds")

RECORDED = [
    ("baseline", dict(method='baseline'),
     "baseline_m_ds_six_e2a76639"),
    ("baseline-lr", dict(method='baseline', lr=0.001, seeds=(0, 1, 2), standardize=True),
     "baseline_m_ds_six_norm-global_d29cfaca"),
    ("same-epochs", dict(method='same-epochs'),
     "same-epochs_m_ds_six_f5c13989"),
    ("full-labeled", dict(method='full-labeled', labeled_fraction=1.0),
     "full-labeled_m_ds_six_lab1_a94585ea"),
    ("b-grpo", dict(method='b-grpo'),
     "b-grpo_m_ds_six_r1_positive_340d16c1"),
    ("b-grpo-r3", dict(method='b-grpo', reward='r3', teacher='t'),
     "b-grpo_m_ds_six_r3_positive_t_8fed2bf6"),
    ("b-grpo-r4-signed", dict(method='b-grpo', reward='r4', teacher='t', advantage='signed', delta=0.6),
     "b-grpo_m_ds_six_r4_signed_t_9bc1e6de"),
    ("b-grpo-stab", dict(method='b-grpo', sup_weight=1.0, balance='inverse-freq', unlabeled_from='ext',
                         val_fraction=0.2, select='val'),
     "b-grpo_m_ds_six_r1_positive_inverse-freq_sup1_from-ext_val0.2_select-val_19392618"),
    ("b-grpo-cp", dict(method='b-grpo', reward_value=2.0, penalty_value=-1.0, action='sample', mu=2),
     "b-grpo_m_ds_six_r1_positive_C2P-1_13f8934a"),
    ("grpo", dict(method='grpo'),
     "grpo_m_ds_six_r1_positive_G8_e8ab85af"),
    ("grpo-eswr", dict(method='grpo', reward='eswr', teacher='t', group_size=4, eswr_alpha=0.3),
     "grpo_m_ds_six_eswr_positive_t_G4_alpha0.3gamma0.5_101ba9cc"),
    ("dino", dict(method='dino'),
     "dino_m_ds_six_c7f5aac5"),
    ("dino-noise", dict(method='dino', dino_views='noise', dino_noise=0.2),
     "dino_m_ds_six_11efb01c"),
    ("fixmatch-tau", dict(method='fixmatch', fixmatch_threshold=0.9),
     "fixmatch_m_ds_six_tau0.9_f735dc3e"),
    ("fixmatch-views", dict(method='fixmatch', fixmatch_views='noise', fixmatch_lambda_u=2.0),
     "fixmatch_m_ds_six_lambda2_views-noise_e4ca9033"),
    ("pseudo-label", dict(method='pseudo-label'),
     "pseudo-label_m_ds_six_fe2ec32c"),
    ("pseudo-label-opts", dict(method='pseudo-label', pseudo_threshold=0.8, pseudo_rampup=0.2),
     "pseudo-label_m_ds_six_tau0.8_ramp0.2_6ce558cb"),
    ("teacher", dict(method='teacher', teacher='t'),
     "teacher_m_ds_six_t_0cd1ecc2"),
    ("teacher-reg", dict(method='teacher', teacher='t', regularize='ls,adv', ls_epsilon=0.2),
     "teacher_m_ds_six_t_reg-ls+adv_7d5341e8"),
    ("b-grpo-r3-reg", dict(method='b-grpo', reward='r3', teacher='t', regularize='ls', save_teacher='x'),
     "b-grpo_m_ds_six_r3_positive_t_reg-ls_d0b91c84"),
    ("reference", dict(method='reference'),
     "reference_m_ds_six_e9412234"),
    ("reference-opts", dict(method='reference', reference_lr=0.003, reference_patience=10, val_fraction=0.25),
     "reference_m_ds_six_66991777"),
    ("norm-global", dict(method='baseline', normalize='global'),
     "baseline_m_ds_six_norm-global_05099d6f"),
    ("head-mean", dict(method='b-grpo', head='mean', model='mf'),
     "b-grpo_mf_ds_six_r1_positive_head-mean_ba3ad71f"),
    ("layer-weighted", dict(method='baseline', layer='weighted', fold='1', val='emobox', select='val'),
     "baseline_m_ds_six_fold1_val-emobox_select-val_layer-weighted_b0e933bc"),
    ("speaker", dict(method='dino', normalize='speaker', speaker_pattern='(?P<speaker>.*)'),
     "dino_m_ds_six_norm-speaker_6954179a"),
    ("wheel-sim", dict(method='baseline', similarity='wheel.json', experiment='table1'),
     "baseline_m_ds_six_c2412de6"),
]
"""(case, settings beside COMMON, run_name) as the trainer of commit 4f743df named them."""

SETTINGS_ORDER = [
    "method", "store", "model", "dataset", "manifests", "fold", "seeds", "labels", "out", "unlabeled_from",
    "experiment", "hidden", "lr", "batch_size", "weight_decay", "epochs_baseline", "epochs_stage2",
    "labeled_fraction", "reward", "teacher", "advantage", "delta", "reward_value", "theta", "epsilon", "beta", "mu",
    "action", "penalty_value", "balance", "sup_weight", "eswr_alpha", "eswr_gamma", "similarity", "group_size",
    "dino_views", "dino_noise", "dino_dropout", "dino_crops", "dino_momentum", "dino_student_temp",
    "dino_teacher_temp", "dino_warmup_teacher_temp", "dino_warmup_frac", "dino_center_momentum", "pseudo_threshold",
    "pseudo_weight", "pseudo_rampup", "fixmatch_threshold", "fixmatch_lambda_u", "fixmatch_views",
    "fixmatch_weak_noise", "fixmatch_strong_noise", "fixmatch_strong_dropout", "val_fraction", "val", "select",
    "diag_pool_rows", "reference_lr", "reference_max_epochs", "reference_patience", "reference_val_fraction",
    "nonfinite", "missing_teacher", "threads", "eval_every", "standardize", "plots", "progress", "save_model",
    "overwrite", "layer", "normalize", "head", "frames_memory_gb", "speaker_pattern", "regularize", "ls_epsilon",
    "eam_snr_min", "eam_snr_max", "adv_epsilon", "adv_alpha", "save_teacher", "teacher_from",
]
"""TrainConfig.to_dict() keys in the order of commit 4f743df (results.json config; results.csv columns follow it)."""


@pytest.mark.parametrize("case,kw,run_name", RECORDED, ids=[c for c, _, _ in RECORDED])
def test_same_settings_keep_their_run_folder_and_hash(case, kw, run_name):
    cfg = TrainConfig(**{**COMMON, **kw})
    assert cfg.run_name == run_name
    assert cfg.config_hash == run_name.rsplit("_", 1)[1]


def test_settings_keep_their_order():
    for _, kw, _ in RECORDED:
        cfg = TrainConfig(**{**COMMON, **kw})
        assert list(cfg.to_dict()) == SETTINGS_ORDER
        assert list(cfg.settings()) == [k for k in SETTINGS_ORDER if k in cfg.settings()]
