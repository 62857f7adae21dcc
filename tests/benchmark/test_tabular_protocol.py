"""The tabular protocols (unsupervised ADBench setting, conformal novelty setting), the adbench
and tabular presets, their files, and the guard's false-alarm guarantee on real tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from unseen.benchmark.presets import get_preset
from unseen.benchmark.presets.tabular import DataRootError, embedded_tables
from unseen.benchmark.protocols.tabular import (
    NoveltySplit,
    TabularResult,
    TabularSpec,
    minmax,
    novelty,
    thresholded,
    unsupervised,
)
from unseen.data.tables import Table, adbench_files, from_arrays, read_adbench
from unseen.guard.conformal import benjamini_hochberg, conformal_threshold, p_values

REPO = Path(__file__).resolve().parents[2]


def adbench_dir() -> Path:
    root = os.environ.get("UNSEEN_DATA_ROOT")
    if not root or not (Path(root) / "adbench_classical19").is_dir():
        pytest.skip("needs UNSEEN_DATA_ROOT with adbench_classical19 (the unpacked data bundle)")
    return Path(root)


def planted(seed: int = 0) -> Table:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(size=(200, 3)), rng.normal(loc=4.0, size=(10, 3))])
    return from_arrays(x, np.r_[np.zeros(200), np.ones(10)].astype(int), name="planted")


def test_minmax_by_hand():
    scale = minmax(np.array([[0.0, 5.0, 2.0], [10.0, 5.0, 4.0]]))
    np.testing.assert_allclose(scale(np.array([[5.0, 5.0, 3.0], [20.0, 6.0, 2.0]])),
                               [[0.5, 0.0, 0.5], [2.0, 1.0, 0.0]])  # constant column: span 1


def test_novelty_split_is_seeded_disjoint_and_tests_every_anomaly():
    anomaly = np.zeros(103, dtype=bool)
    anomaly[[3, 50, 99]] = True
    s = NoveltySplit.draw(anomaly, seed=4)
    assert (s.fit.size, s.cal.size, s.test.size) == (50, 25, 28)
    parts = np.concatenate([s.fit, s.cal, s.test])
    assert np.unique(parts).size == 103
    assert set(np.flatnonzero(anomaly)) <= set(s.test.tolist())
    assert not anomaly[s.fit].any() and not anomaly[s.cal].any()
    again = NoveltySplit.draw(anomaly, seed=4)
    np.testing.assert_array_equal(again.cal, s.cal)
    assert not np.array_equal(NoveltySplit.draw(anomaly, seed=5).cal, s.cal)


def test_thresholds_by_hand():
    # cal 1..19 (n = 19, α = 0.05: k = ⌈20 · 0.95⌉ = 19, threshold 19). Test normals 18.5, 19.5;
    # anomalies 100, 0. Conformal flags 19.5 and 100. p-values 0.1, 0.05, 0.05, 1; BH at 0.1
    # (m = 4) rejects the two at 0.05 ≤ 2 · 0.1 / 4. Contamination: 90th pct of 0..9 = 8.1.
    test = np.array([18.5, 19.5, 100.0, 0.0])
    is_anomaly = np.array([False, False, True, True])
    out = thresholded(np.arange(1.0, 20.0), test, is_anomaly, train=np.arange(10.0))
    assert (out["conformal_fa_rate"], out["conformal_recall"], out["conformal_fdr"]) == (0.5, 0.5, 0.5)
    assert (out["bh_flagged"], out["bh_fdr"], out["bh_recall"]) == (2, 0.5, 0.5)
    assert (out["contamination_fa_rate"], out["contamination_recall"]) == (1.0, 0.5)
    assert out["contamination_fdr"] == pytest.approx(2 / 3)


def test_unsupervised_record_equals_pyod_and_sklearn():
    pytest.importorskip("pyod")
    from pyod.models.copod import COPOD
    from pyod.models.knn import KNN
    from sklearn.metrics import average_precision_score, roc_auc_score

    table = planted()
    x = minmax(table.features)(table.features)
    for name, ref in (("copod", COPOD()), ("kthnn", KNN())):
        rec = unsupervised(table, name, seeds=[0, 1, 2])
        s = ref.fit(x).decision_scores_
        assert rec["auroc"] == pytest.approx(roc_auc_score(table.anomaly, s), abs=1e-12)
        assert rec["aupr"] == pytest.approx(average_precision_score(table.anomaly, s), abs=1e-12)
        assert rec["seeds"] == [0]  # not randomised: one run
    rec = unsupervised(table, "iforest", seeds=[0, 1, 2])
    assert rec["seeds"] == [0, 1, 2] and rec["auroc_std"] > 0


def test_novelty_record_counts():
    rec = novelty(planted(), "ecod", seed=0)
    assert (rec["n_fit"], rec["n_cal"], rec["n_test_normal"], rec["n_test_anomaly"]) == (100, 50, 50, 10)
    assert rec["conformal_recall"] == 1.0  # anomalies 4σ out in all three features


def test_leaderboard_average_rank_by_hand():
    r = TabularResult("t", ["a", "b", "c"], ["s1", "s2"])
    for ds, vals in (("s1", (0.9, 0.8, 0.7)), ("s2", (0.6, 0.6, 0.9))):
        for det, v in zip("abc", vals, strict=True):
            r.records.append({"dataset": ds, "detector": det, "auroc": v, "aupr": v / 2})
    # s1 ranks a 1, b 2, c 3; s2: c 1, a and b tie for 2-3 → 2.5 each
    board = {row["detector"]: row for row in r.leaderboard()}
    assert board["a"]["avg_rank"] == 1.75 and board["b"]["avg_rank"] == 2.25
    assert board["c"]["avg_rank"] == 2.0
    assert board["a"]["mean_auroc"] == pytest.approx(0.75)
    assert [row["detector"] for row in r.leaderboard()] == ["a", "c", "b"]


def test_embedded_sets_are_the_documented_ones():
    sets = {t.name: t for t in embedded_tables()}
    assert sets["wdbc"].features.shape == (367, 30) and sets["wdbc"].n_anomalies == 10
    assert sets["wine"].features.shape == (129, 13) and sets["wine"].n_anomalies == 10
    assert sets["optdigits"].features.shape == (1669, 64) and sets["optdigits"].n_anomalies == 50


def test_tabular_preset_files(tmp_path):
    spec = get_preset("tabular")
    assert isinstance(spec, TabularSpec)
    spec.seeds = 1
    result = spec.run(["ecod", "hbos"], seed=0)
    files = result.write_outputs(tmp_path)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in page and "http://" not in page and "https://" not in page
    data = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert len(data["records"]) == 6 and {r["detector"] for r in data["leaderboard"]} == {"ecod", "hbos"}
    assert (tmp_path / "results.csv").read_text(encoding="utf-8").count("\n") == 7
    assert set(files) == {"results.json", "results.csv", "novelty.csv", "report.html"}
    with pytest.raises(KeyError, match="unknown detector"):
        spec.run(["nope"])


def test_adbench_preset_needs_a_data_root(tmp_path):
    with pytest.raises(DataRootError, match="--data-root"):
        get_preset("adbench")
    folder = tmp_path / "adbench_classical19" / "Classical"
    folder.mkdir(parents=True)
    np.savez(folder / "6_cardio.npz", X=np.ones((3, 2)), y=np.zeros(3))
    with pytest.raises(DataRootError, match="found 1"):
        get_preset("adbench", data_root=tmp_path)


def test_cli_runs_the_tabular_preset(tmp_path):
    from unseen.cli import main

    assert main(["benchmark", "--preset", "tabular", "--detectors", "copod", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["records"]


@pytest.mark.data
def test_adbench_subset_unsupervised_equals_pyod():
    # small real sets keep CI fast: wine (129 rows) and glass (214)
    pytest.importorskip("pyod")
    from pyod.models.hbos import HBOS
    from sklearn.metrics import roc_auc_score

    for stem in ("45_wine", "14_glass"):
        table = read_adbench(next(p for p in adbench_files(adbench_dir()) if p.stem == stem))
        x = minmax(table.features)(table.features)
        want = roc_auc_score(table.anomaly, HBOS().fit(x).decision_scores_)
        assert unsupervised(table, "hbos", [0])["auroc"] == pytest.approx(want, abs=1e-12)


@pytest.mark.data
def test_guard_keeps_its_false_alarm_bound_on_a_real_table():
    # cardio: fit ECOD once on 40 % of the normal rows; then 400 random calibration / test splits
    # of the other normals (plus all anomalies in test). Conformal theory: the mean false-alarm
    # rate over splits is ≤ α (and ≥ α − 1/(n_cal + 1) for untied scores); BH's FDR ≤ 0.1.
    from unseen.detectors import create
    from unseen.representation import Representation

    table = read_adbench(next(p for p in adbench_files(adbench_dir()) if p.stem == "6_cardio"))
    rng = np.random.default_rng(0)
    normal = rng.permutation(np.flatnonzero(~table.anomaly))
    fit, rest = normal[: int(0.4 * normal.size)], normal[int(0.4 * normal.size):]
    scale = minmax(table.features[fit])
    det = create("ecod").fit(Representation(features=scale(table.features[fit])))
    s_rest = det.score(Representation(features=scale(table.features[rest])))
    s_anom = det.score(Representation(features=scale(table.features[table.anomaly])))
    alpha, fdr, n_cal = 0.05, 0.1, 300
    fa, fdp = [], []
    for _ in range(400):
        order = rng.permutation(rest.size)
        cal, test_normal = s_rest[order[:n_cal]], s_rest[order[n_cal:]]
        fa.append((test_normal > conformal_threshold(cal, alpha)).mean())
        test = np.concatenate([test_normal, s_anom])
        sel = benjamini_hochberg(p_values(np.sort(cal), test), fdr)
        fdp.append(sel[: test_normal.size].sum() / max(sel.sum(), 1))
    fa, fdp = np.array(fa), np.array(fdp)
    se = fa.std() / np.sqrt(fa.size)
    assert fa.mean() <= alpha + 3 * se
    assert fa.mean() >= alpha - 1 / (n_cal + 1) - 3 * se
    assert fdp.mean() <= fdr + 3 * fdp.std() / np.sqrt(fdp.size)


_NO_TORCH = """
import sys
from unseen.benchmark.presets.tabular import tabular
spec = tabular()
spec.seeds = 1
spec.run(None, seed=0)
bad = sorted(m for m in ("torch", "faiss") if m in sys.modules)
print("loaded:", bad)
sys.exit(1 if bad else 0)
"""


def test_tabular_path_imports_neither_torch_nor_faiss():
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-c", _NO_TORCH], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]


def test_tabular_files_import_only_torch_free_modules():
    # What the tabular files themselves import (the package __init__ files are the layout
    # issue's): no torch, no faiss, and within unseen only modules that need neither.
    import ast

    allowed = {"unseen.detectors", "unseen.detectors.base", "unseen.detectors.registry",
               "unseen.representation", "unseen._io", "unseen.guard.conformal", "unseen.metrics",
               "unseen.data.tables", "unseen.benchmark.presets.registry",
               "unseen.benchmark.protocols.tabular", "unseen.benchmark.report.tabular"}
    src = REPO / "src" / "unseen"
    files = [*sorted((src / "detectors" / "tabular").glob("*.py")), src / "data" / "tables.py",
             *(src / "benchmark" / sub / "tabular.py" for sub in ("protocols", "presets", "report"))]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for mod in mods:
                assert mod.split(".")[0] not in ("torch", "faiss"), f"{path.name} imports {mod}"
            top = mods[0]
            if top.startswith("unseen"):
                ok = top in allowed or top.startswith("unseen.detectors.tabular") or top == "unseen"
                assert ok, f"{path.name} imports {top}"
