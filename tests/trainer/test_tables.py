"""Paper-style tables from tidy rows: cell statistics and the Table 1-5 layouts."""

import math

import pandas as pd
import pytest

from trainer.tables import cell, load_results, render


def _rows(method, dataset, f1s, **kw):
    base = dict(experiment="", stage="final", model="sv", reward="", teacher="", advantage="", labels="six",
                unlabeled_from="", labeled_fraction=0.5)
    return [{**base, "method": method, "dataset": dataset, "fold": f, "seed": s, "macro_f1": v, **kw}
            for (f, s), v in f1s.items()]


def test_cell_mean_over_folds_then_std_over_seeds():
    df = pd.DataFrame(_rows("baseline", "a", {(1, 0): 0.5, (2, 0): 0.7, (1, 1): 0.7, (2, 1): 0.9}))
    assert cell(df) == "70.0 ± 14.1"  # seed means 60 and 80
    one_seed = pd.DataFrame(_rows("baseline", "a", {(1, 0): 0.5, (2, 0): 0.7}))
    assert cell(one_seed) == "60.0 ± 14.1"  # std over folds
    assert cell(one_seed.iloc[:0]) == "-"


def test_table1_and_table3_layouts(tmp_path):
    rows = (_rows("baseline", "iemocap", {(1, 0): 0.6}) + _rows("b-grpo", "iemocap", {(1, 0): 0.7}, reward="r1",
            advantage="positive") + _rows("b-grpo", "iemocap", {(1, 0): 0.65}, reward="r1", advantage="signed")
            + _rows("b-grpo", "casia", {(1, 0): 0.3}, reward="r1", advantage="positive"))
    for r in rows:
        r["experiment"] = "table1"
    p = tmp_path / "results.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    df = load_results([tmp_path])
    t1 = render(df, "auto")
    assert "| method | iemocap | casia |" in t1
    assert "| Baseline | 60.0 ± 0.0 | - |" in t1 and "| B-GRPO | 70.0 ± 0.0 | 30.0 ± 0.0 |" in t1
    t3 = render(df, "table3")
    assert "| w/o A_i > 0 | 65.0 ± 0.0 | - |" in t3


def test_table5_layout():
    rows = (_rows("baseline", "meld", {(1, 0): 0.27}, labeled_fraction=1.0)
            + _rows("b-grpo", "meld", {(1, 0): 0.31}, reward="r1", advantage="positive", labeled_fraction=1.0)
            + _rows("b-grpo", "meld", {(1, 0): 0.29}, reward="r1", advantage="positive", labeled_fraction=1.0,
                    unlabeled_from="savee"))
    t5 = render(pd.DataFrame(rows), "table5")
    assert "| savee → meld | 27.0 ± 0.0 | 31.0 ± 0.0 | 29.0 ± 0.0 |" in t5


def test_unknown_layout_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="known: auto"):
        render(pd.DataFrame(_rows("baseline", "a", {(1, 0): 0.5})), "table9")
    with pytest.raises(ValueError, match="no results.csv"):
        load_results([tmp_path])


def test_columns_follow_the_papers_order_whatever_the_row_order():
    rows = []
    for ds in ("urdu", "m3ed", "cafe", "meld", "iemocap", "casia", "emodb"):
        rows += _rows("baseline", ds, {(1, 0): 0.5})
    t = render(pd.DataFrame(rows), "generic")
    assert "| run | iemocap | casia | cafe | meld | m3ed | emodb | urdu |" in t


def test_table2_teachers_in_the_papers_order():
    rows = []
    for t in ("whisper-large-v3", "aaa-teacher", "emotion2vec-base", "emotion2vec-plus-large"):
        rows += _rows("b-grpo", "iemocap", {(1, 0): 0.5}, reward="r3", advantage="positive", teacher=t)
    text = render(pd.DataFrame(rows), "table2")
    order = [text.index(f"teacher-reward {t}") for t in ("emotion2vec-plus-large", "emotion2vec-base",
                                                          "whisper-large-v3", "aaa-teacher")]
    assert order == sorted(order)


def test_collapsed_and_under_trained_runs_are_marked():
    rows = _rows("b-grpo", "a", {(1, 0): 0.4, (2, 0): 0.5, (1, 1): 0.6}, reward="r1", advantage="positive")
    for r, c, u in zip(rows, (True, False, True), (False, False, True)):
        r.update(collapsed=c, under_trained=u, collapse_epoch=120 if c else -1)
    t = render(pd.DataFrame(rows), "table1")
    assert "⚠2/3 †1/3" in t and "k of n runs collapsed" in t


def test_compare_gives_fold_and_seed_level_differences():
    base = {(f, s): 0.5 + 0.01 * f for f in (1, 2) for s in range(4)}
    better = {k: v + 0.05 + 0.001 * k[1] for k, v in base.items()}
    rows = _rows("same-epochs", "a", base) + _rows("dino", "a", better)
    t = render(pd.DataFrame(rows), "generic", compare="same-epochs")
    dino = next(line for line in t.splitlines() if line.startswith("| DINO"))
    # both folds' seed-mean differences are +5.15: no variance between folds, so no fold-level test and no '*'
    assert "Δ +5.2 (2 folds, all equal: no test)" in dino and "*" not in dino
    assert "seed level +5.2 [+5.1, +5.2] n=8 runs p=0.0078" in dino  # 8 positive pairs: exact p = 2 / 2^8
    same = next(line for line in t.splitlines() if line.startswith("| Same epochs"))
    assert "Δ" not in same
    assert "paired t-test over folds" in t and "Holm" in t and "not independent" in t


def test_oracle_and_selection_are_labelled():
    rows = _rows("baseline", "a", {(1, 0): 0.5}, select="val", oracle_macro_f1=0.9)
    t = render(pd.DataFrame(rows), "generic")
    assert "50.0 ± 0.0" in t and "best validation epoch" in t
    o = render(pd.DataFrame(rows), "generic", oracle=True)
    assert "90.0 ± 0.0" in o and "optimistic" in o and "best TEST epoch" in o


def test_compare_pairs_val_selected_rows_with_val_selected_rows():
    runs = {(1, s): 0.5 for s in range(5)}
    rows = (_rows("same-epochs", "a", runs, select="last") + _rows("same-epochs", "a", {k: 0.6 for k in runs},
            select="val") + _rows("dino", "a", {k: 0.7 for k in runs}, select="val"))
    t = render(pd.DataFrame(rows), "generic", compare="same-epochs")
    dino = next(line for line in t.splitlines() if line.startswith("| DINO"))
    assert "Δ +10.0 (1 fold: no fold-level test); seed level +10.0 [+10.0, +10.0] n=5" in dino  # val (60), not 50


def _two_methods(**kw):
    rows = (_rows("baseline", "iemocap", {(1, 0): 0.6, (2, 0): 0.8}, ua=0.5, wa=0.7, last_macro_f1=0.6, last_ua=0.5,
                  last_wa=0.7, last_wheel=0.2, wheel=0.25, **kw)
            + _rows("b-grpo", "iemocap", {(1, 0): 0.7, (2, 0): 0.7}, reward="r1", advantage="positive", ua=0.4,
                    wa=0.9, last_macro_f1=0.7, last_ua=0.4, last_wa=0.9, last_wheel=0.3, wheel=0.35, **kw))
    return pd.DataFrame(rows)


def test_metric_picks_any_metric_column_and_errors_list_them():
    from trainer.tables import metric_columns

    df = _two_methods()
    assert metric_columns(df) == ["macro_f1", "ua", "wa", "wheel"]
    assert "| Baseline | 50.0 ± 0.0 |" in render(df, "table1", metric="ua") and "(UA %)" in render(df, "table1",
                                                                                                    metric="ua")
    t = render(df, "table1", metric="wheel")
    assert "(wheel %)" in t and "| B-GRPO | 35.0 ± 0.0 |" in t
    with pytest.raises(ValueError, match="--metric 'f1': not a metric column.*available: macro_f1, ua, wa, wheel"):
        render(df, "table1", metric="f1")
    with pytest.raises(ValueError, match="--oracle: .*oracle_ua"):
        render(df, "table1", metric="ua", oracle=True)


def test_formats_csv_and_latex_carry_the_same_cells():
    import io

    df = _two_methods()
    csv = render(df, "table1", fmt="csv")
    back = pd.read_csv(io.StringIO(csv), comment="#")
    assert list(back.columns) == ["method", "iemocap_macro_f1_pct"]
    assert back.set_index("method").loc["Baseline", "iemocap_macro_f1_pct"] == "70.0 ± 14.1"
    assert csv.startswith("# Table 1.") and "std over folds" in csv.splitlines()[-1]
    tex = render(df, "table1", fmt="latex", metric="ua")
    assert r"\begin{tabular}{lr}" in tex and r"Baseline & 50.0 $\pm$ 0.0 \\" in tex and r"(UA \%)" in tex
    assert "±" not in tex and "**" not in tex
    assert render(df, "table1") == render(df, "table1", fmt="md")
    with pytest.raises(ValueError, match="--format 'html'"):
        render(df, "table1", fmt="html")


def test_paper_tables_never_average_two_configurations():
    a = _two_methods(lr=1e-4, seeds="0")
    b = _two_methods(lr=1e-3, seeds="0")
    with pytest.raises(ValueError, match=r"\(baseline on iemocap\) would average 2 configurations differing in "
                                         r"lr: 0\.0001, 0\.001"):
        render(pd.concat([a, b]), "table1")
    # runs of one configuration written seed by seed (seeds 0 and 1) are one cell; generic splits configurations
    one = pd.concat([a, _two_methods(lr=1e-4, seeds="1").assign(seed=1)])
    assert "| Baseline | 70.0 ± 0.0 |" in render(one, "table1")
    t = render(pd.concat([a, b]), "generic")
    assert "lr=0.0001 |" in t and "lr=0.001 |" in t


def test_fold_level_significance_in_a_table_equals_the_hand_computation():
    # two methods against same-epochs, 3 folds x 2 seeds, fold differences d = (2.3, 3.3, 4.3) points each:
    # t = 3.3 / (1 / sqrt 3) = 5.716 on 2 df, p = 1 - t / sqrt(t^2 + 2) = 0.029 < 0.05, but Holm over the
    # table's 2 comparisons gives 2 x 0.029 = 0.059: no '*'
    d = {1: 0.023, 2: 0.033, 3: 0.043}
    base = {(f, s): 0.5 + 0.1 * s for f in (1, 2, 3) for s in (0, 1)}
    rows = (_rows("same-epochs", "a", base) + _rows("dino", "a", {k: v + d[k[0]] for k, v in base.items()})
            + _rows("full-labeled", "a", {k: v + d[k[0]] for k, v in base.items()}))
    t = render(pd.DataFrame(rows), "generic", compare="same-epochs")
    tt = 3.3 * math.sqrt(3)
    p = 1 - tt / math.sqrt(tt * tt + 2)
    for name in ("DINO", "Full labeled"):
        line = next(x for x in t.splitlines() if x.startswith(f"| {name}"))
        assert f"Δ +3.3 [" in line and f"3 folds p={p:.2g} p_Holm={2 * p:.2g};" in line and "*" not in line
    assert "over the 2 comparison(s) of this table" in t
    # alone in its table, the same comparison is significant
    alone = render(pd.DataFrame(rows[:12]), "generic", compare="same-epochs")
    assert f"p={p:.2g} p_Holm={p:.2g} *;" in next(x for x in alone.splitlines() if x.startswith("| DINO"))


def test_oracle_tables_say_optimistic_in_title_columns_and_rows(tmp_path):
    rows = _rows("baseline", "a", {(1, 0): 0.5}, select="last", oracle_macro_f1=0.9)
    for fmt in ("md", "csv", "latex"):
        t = render(pd.DataFrame(rows), "generic", oracle=True, fmt=fmt)
        title = t.splitlines()[0] if fmt != "latex" else next(x for x in t.splitlines() if "caption" in x)
        assert "OPTIMISTIC" in title, fmt
    md = render(pd.DataFrame(rows), "generic", oracle=True)
    assert "| run | a [OPTIMISTIC: best test epoch] |" in md
    assert "| Baseline sv labeled_fraction=0.5 labels=six select=last [OPTIMISTIC: best test epoch] | 90.0 ± 0.0 |" in md
    csv = render(pd.DataFrame(rows), "generic", oracle=True, fmt="csv")
    assert "run,a_oracle_optimistic_macro_f1_pct" in csv


def test_paper_tables_show_paper_rows_and_mark_ours():
    paper = dict(reward="r1", advantage="positive", experiment="table3")
    rows = (_rows("b-grpo", "iemocap", {(1, 0): 0.6}, **paper)
            + _rows("b-grpo", "iemocap", {(1, 0): 0.7}, sup_weight=1.0, **paper)
            + _rows("b-grpo", "iemocap", {(1, 0): 0.65}, balance="inverse-freq", **paper)
            + _rows("b-grpo", "iemocap", {(1, 0): 0.55}, protocol="converged", **paper))
    t = render(pd.DataFrame(rows), "table3")
    assert "| A_i > 0 (eq. 6) | 60.0 ± 0.0 |" in t
    assert "| A_i > 0 (eq. 6) (ours: sup_weight=1) | 70.0 ± 0.0 |" in t
    assert "| A_i > 0 (eq. 6) (ours: balance=inverse-freq) | 65.0 ± 0.0 |" in t
    assert "| A_i > 0 (eq. 6) (ours: protocol=converged) | 55.0 ± 0.0 |" in t
    t1 = render(pd.DataFrame(rows), "table1")
    assert "| B-GRPO | 60.0 ± 0.0 |" in t1 and "| B-GRPO (ours: sup_weight=1) | 70.0 ± 0.0 |" in t1
    teachers = (_rows("b-grpo", "iemocap", {(1, 0): 0.6}, reward="r3", advantage="positive", teacher="t")
                + _rows("b-grpo", "iemocap", {(1, 0): 0.62}, reward="r3", advantage="positive", teacher="t",
                        regularize="ls"))
    t2 = render(pd.DataFrame(teachers), "table2")
    assert "| r3 | 60.0 ± 0.0 |" in t2 and "| r3 (ours: regularize=ls) | 62.0 ± 0.0 |" in t2


def test_reach_and_under_predicted_marks():
    rows = _rows("pseudo-label", "a", {(1, 0): 0.5, (1, 1): 0.6}, mask_rate=0.001, mask_rate_max=0.004,
                 pool_agreement_stage1=0.99, under_predicted=True)
    t = render(pd.DataFrame(rows), "generic")
    assert "↓2/2 mask 0.1% (max 0.4%) kept 99.0%" in t and "barely acted" in t


def test_tables_know_every_hashed_setting():
    import dataclasses

    from trainer.config import TrainConfig
    from trainer.tables import SETTINGS

    hashed = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("hashed", True)} - {"options"}
    assert hashed <= set(SETTINGS)  # a new shared setting goes into base.LATER_SHARED, or cells would mix configs
