"""Tests for unseen.metrics: scikit-learn agreement, hand-computed cases, brute force."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from unseen import metrics as M

TOL = 1e-9


# --------------------------------------------------------------------------- helpers


def _labels(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(y_ood, scores) in the layout scikit-learn expects."""
    y_ood = np.r_[np.zeros(len(id_scores)), np.ones(len(ood_scores))]
    return y_ood, np.r_[id_scores, ood_scores]


def _openood_fpr(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float) -> float:
    """OpenOOD v1.5's recipe: roc_curve(ood_indicator, -conf) with default settings."""
    y_ood, s = _labels(id_scores, ood_scores)
    fpr_list, tpr_list, _ = skm.roc_curve(y_ood, s)
    return float(fpr_list[np.argmax(tpr_list >= tpr)])


def _brute_fpr_id(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float) -> float:
    """Classic rule by exhaustive search: smallest t with >= tpr of ID at or below t."""
    for t in np.unique(id_scores):
        if np.mean(id_scores <= t) >= tpr:
            return float(np.mean(ood_scores <= t))
    raise AssertionError("unreachable: t = max(id) always qualifies")


def _brute_fpr_ood_no_ties(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float) -> float:
    """Without ties: largest t catching >= tpr of OOD (s >= t); fraction of ID rejected."""
    for t in np.unique(ood_scores)[::-1]:
        if np.mean(ood_scores >= t) >= tpr:
            return float(np.mean(id_scores >= t))
    raise AssertionError("unreachable: t = min(ood) always qualifies")


def _brute_detection_error(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    thresholds = np.r_[np.unique(np.r_[id_scores, ood_scores]), np.inf]
    return min(
        0.5 * np.mean(ood_scores < t) + 0.5 * np.mean(id_scores >= t) for t in thresholds
    )


def _brute_curve(id_scores, id_correct, ood_scores) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, CCR) for "accept iff s <= t" at -inf and at every distinct score."""
    thresholds = np.r_[-np.inf, np.unique(np.r_[id_scores, ood_scores])]
    fpr = np.array([np.mean(ood_scores <= t) for t in thresholds])
    ccr = np.array([np.mean(id_correct & (id_scores <= t)) for t in thresholds])
    return fpr, ccr


def _brute_ccr(id_scores, id_correct, ood_scores, fpr: float) -> float:
    fprs, ccrs = _brute_curve(id_scores, id_correct, ood_scores)
    return float(ccrs[fprs <= fpr].max())


def _brute_oscr(id_scores, id_correct, ood_scores) -> float:
    fprs, ccrs = _brute_curve(id_scores, id_correct, ood_scores)
    return float(np.sum(np.diff(fprs) * (ccrs[1:] + ccrs[:-1]) / 2))


def _datasets() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(12345)
    return {
        "random": (rng.normal(0.0, 1.0, 700), rng.normal(0.8, 1.2, 500)),
        "heavy_ties": (
            np.round(rng.uniform(0, 1, 600) * 3) / 3,
            np.round(rng.uniform(0.2, 1.2, 400) * 3) / 3,
        ),
        "constant": (np.full(50, 2.5), np.full(30, 2.5)),
        "imbalance_id_1_to_1000": (rng.normal(0, 1, 3), rng.normal(1, 1, 3000)),
        "imbalance_ood_1_to_1000": (rng.normal(0, 1, 3000), rng.normal(1, 1, 3)),
        "imbalance_ties": (rng.integers(0, 4, 4000).astype(float), rng.integers(1, 5, 4)),
    }


DATASETS = _datasets()


# --------------------------------------------------------------------------- scikit-learn


@pytest.mark.parametrize("name", list(DATASETS))
def test_matches_sklearn(name: str) -> None:
    id_s, ood_s = DATASETS[name]
    y_ood, s = _labels(id_s, ood_s)
    assert abs(M.auroc(id_s, ood_s) - skm.roc_auc_score(y_ood, s)) < TOL
    assert abs(M.aupr_out(id_s, ood_s) - skm.average_precision_score(y_ood, s)) < TOL
    assert abs(M.aupr_in(id_s, ood_s) - skm.average_precision_score(1 - y_ood, -s)) < TOL
    for tpr in (0.5, 0.9, 0.95, 1.0):
        got = M.fpr_at_tpr(id_s, ood_s, tpr=tpr, positive="ood")
        assert got == _openood_fpr(id_s, ood_s, tpr)


@pytest.mark.parametrize("name", list(DATASETS))
@pytest.mark.parametrize("drop", [True, False])
def test_roc_curve_matches_sklearn(name: str, drop: bool) -> None:
    id_s, ood_s = DATASETS[name]
    ours = M.roc_curve(id_s, ood_s, drop_intermediate=drop)
    ref = skm.roc_curve(*_labels(id_s, ood_s), drop_intermediate=drop)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", list(DATASETS))
def test_evaluate_agrees_with_references(name: str) -> None:
    id_s, ood_s = DATASETS[name]
    y_ood, s = _labels(id_s, ood_s)
    res = M.evaluate(id_s, ood_s)
    assert set(res) == {
        "auroc", "aupr_in", "aupr_out", "fpr95_id", "fpr95_ood", "detection_error"
    }
    assert abs(res["auroc"] - skm.roc_auc_score(y_ood, s)) < TOL
    assert abs(res["aupr_out"] - skm.average_precision_score(y_ood, s)) < TOL
    assert abs(res["aupr_in"] - skm.average_precision_score(1 - y_ood, -s)) < TOL
    assert res["fpr95_ood"] == _openood_fpr(id_s, ood_s, 0.95)
    assert res["fpr95_id"] == _brute_fpr_id(id_s, ood_s, 0.95)
    assert abs(res["detection_error"] - _brute_detection_error(id_s, ood_s)) < TOL
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in res.values())


def test_one_million_samples_match_sklearn_quickly() -> None:
    import time

    rng = np.random.default_rng(7)
    # float32 scores, as detectors produce them, contain a few natural ties at this size.
    id_s = rng.normal(0, 1, 500_000).astype(np.float32)
    ood_s = rng.normal(1, 1, 500_000).astype(np.float32)
    start = time.perf_counter()
    res = M.evaluate(id_s, ood_s)
    elapsed = time.perf_counter() - start
    y_ood, s = _labels(id_s.astype(np.float64), ood_s.astype(np.float64))
    assert abs(res["auroc"] - skm.roc_auc_score(y_ood, s)) < TOL
    assert abs(res["aupr_out"] - skm.average_precision_score(y_ood, s)) < TOL
    assert abs(res["aupr_in"] - skm.average_precision_score(1 - y_ood, -s)) < TOL
    fpr_list, tpr_list, _ = skm.roc_curve(y_ood, s)
    assert res["fpr95_ood"] == fpr_list[np.argmax(tpr_list >= 0.95)]
    # Generous bound for a shared 2-core machine; typically well under a second.
    assert elapsed < 3.0, f"evaluate took {elapsed:.2f} s on 10^6 samples"


# --------------------------------------------------------------------------- hand-computed


def test_fpr_conventions_by_hand() -> None:
    id_s = np.arange(1.0, 21.0)  # 1, 2, ..., 20
    ood_s = np.array([5.0, 19.0, 19.5, 25.0])
    # ID positive: 19/20 = 95% of ID scores are <= 19, so t = 19; OOD <= 19 are 5 and 19
    # (the tie counts as accepted): 2/4.
    assert M.fpr_at_tpr(id_s, ood_s, 0.95, positive="id") == 0.5
    # OOD positive: catching >= 95% of 4 OOD means all 4, so t = 5 (predict OOD iff s >= 5);
    # ID scores >= 5 are 5..20: 16/20.
    assert M.fpr_at_tpr(id_s, ood_s, 0.95, positive="ood") == 0.8
    # At 50%: ID positive t = 10 (10/20), OOD <= 10 is {5}: 1/4. OOD positive: 2 of 4 OOD
    # are >= 19.5, so t = 19.5; ID >= 19.5 is {20}: 1/20.
    assert M.fpr_at_tpr(id_s, ood_s, 0.5, positive="id") == 0.25
    assert M.fpr_at_tpr(id_s, ood_s, 0.5, positive="ood") == 0.05
    res = M.evaluate(id_s, ood_s)
    assert (res["fpr95_id"], res["fpr95_ood"]) == (0.5, 0.8)
    # Error of "OOD iff s >= t" = 0.5 * (OOD missed) + 0.5 * (ID rejected):
    # t=25: 0.5*3/4 + 0 = 0.375; t=20: 0.375 + 0.5*1/20 = 0.4; t=19.5: 0.5*2/4 + 0.5*1/20
    # = 0.275; t=19: 0.5*1/4 + 0.5*2/20 = 0.175; t=18..6 miss 1/4 and reject more; t=5:
    # 0 + 0.5*16/20 = 0.4; below: larger. Minimum 0.175.
    assert abs(res["detection_error"] - 0.175) < TOL


def test_fpr_ood_reproduces_openood_collinear_drop() -> None:
    # Each distinct score holds one ID and one OOD sample, so the full ROC curve is the
    # diagonal (0,0), (.25,.25), (.5,.5), (.75,.75), (1,1). scikit-learn drops the collinear
    # middle points (only the first and last distinct thresholds stay), leaving
    # (0,0), (.25,.25), (1,1): the first TPR >= 0.5 is at FPR 1.0, which OpenOOD reports.
    scores = np.array([1.0, 2.0, 3.0, 4.0])
    assert M.fpr_at_tpr(scores, scores, 0.5, positive="ood") == 1.0
    assert _openood_fpr(scores, scores, 0.5) == 1.0
    # The classic rule has no such step: t = 2 (2/4 of ID <= 2) and OOD <= 2 is 2/4.
    assert M.fpr_at_tpr(scores, scores, 0.5, positive="id") == 0.5


def test_constant_scores() -> None:
    id_s, ood_s = np.full(6, 0.3), np.full(2, 0.3)
    res = M.evaluate(id_s, ood_s)
    # One threshold: everything tied. AUROC is 1/2; AP is the prevalence of the positive
    # class; every sample is accepted as ID and the best detector says "all ID".
    assert res == {
        "auroc": 0.5,
        "aupr_in": 6 / 8,
        "aupr_out": 2 / 8,
        "fpr95_id": 1.0,
        "fpr95_ood": 1.0,
        "detection_error": 0.5,
    }


def test_perfect_and_reversed_separation() -> None:
    id_s, ood_s = np.array([0.0, 1.0, 2.0]), np.array([3.0, 4.0])
    assert M.evaluate(id_s, ood_s) == {
        "auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0,
        "fpr95_id": 0.0, "fpr95_ood": 0.0, "detection_error": 0.0,
    }
    flipped = M.evaluate(ood_s, id_s)
    assert flipped["auroc"] == 0.0
    assert flipped["fpr95_id"] == 1.0 and flipped["fpr95_ood"] == 1.0
    # Every threshold is at least as bad as the trivial ones.
    assert flipped["detection_error"] == 0.5


def test_auroc_and_ap_by_hand_with_tie() -> None:
    id_s, ood_s = [0.1, 0.5], [0.5, 0.9]
    # Pairs (ood > id): (0.5,0.1), (0.9,0.1), (0.9,0.5) -> 3; tie (0.5,0.5) -> 1/2. 3.5/4.
    assert M.auroc(id_s, ood_s) == 0.875
    # OOD positive: t=0.9 -> P=1, R=1/2; t=0.5 -> P=2/3, R=1 (tie pulls in one ID).
    # AP = 1/2*1 + 1/2*2/3 = 5/6.
    assert abs(M.aupr_out(id_s, ood_s) - 5 / 6) < TOL
    # ID positive ("ID iff s <= t"): t=0.1 -> P=1, R=1/2; t=0.5 -> P=2/3, R=1. Also 5/6.
    assert abs(M.aupr_in(id_s, ood_s) - 5 / 6) < TOL


def test_integer_scores_equal_float_scores() -> None:
    id_i, ood_i = np.array([1, 2, 2, 3]), np.array([2, 3, 4])
    assert M.evaluate(id_i, ood_i) == M.evaluate(id_i.astype(float), ood_i.astype(float))


def test_ccr_and_oscr_by_hand() -> None:
    id_s = np.array([0.1, 0.2, 0.3, 0.4])
    correct = np.array([True, False, True, True])
    ood_s = np.array([0.25, 0.35, 0.5])
    # Sweeping "accept iff s <= t" upwards gives (FPR, CCR):
    # 0.1 -> (0, 1/4); 0.2 (wrong) -> same; 0.25 -> (1/3, 1/4); 0.3 -> (1/3, 2/4);
    # 0.35 -> (2/3, 2/4); 0.4 -> (2/3, 3/4); 0.5 -> (1, 3/4).
    assert M.ccr_at_fpr(id_s, correct, ood_s, 0.0) == 0.25
    assert M.ccr_at_fpr(id_s, correct, ood_s, 1 / 3) == 0.5
    assert M.ccr_at_fpr(id_s, correct, ood_s, 0.5) == 0.5  # 2/3 of OOD would be too many
    assert M.ccr_at_fpr(id_s, correct, ood_s, 2 / 3) == 0.75
    assert M.ccr_at_fpr(id_s, correct, ood_s, 1.0) == 0.75
    # Area: 1/3 * (1/4 + 2/4 + 3/4) = 1/2.
    assert abs(M.oscr(id_s, correct, ood_s) - 0.5) < TOL


def test_oscr_ties_get_half_credit_and_perfect_case() -> None:
    assert M.oscr([0.5], [True], [0.5]) == 0.5
    assert M.ccr_at_fpr([0.5], [True], [0.5], 0.0) == 0.0  # the tied OOD may not enter
    assert M.oscr([0.1], [True], [0.9]) == 1.0
    assert M.oscr([0.1, 0.2], [True, False], [0.9]) == 0.5  # capped by accuracy 1/2
    assert M.oscr([0.1], [False], [0.9]) == 0.0


def test_id_accuracy_and_correct_mask() -> None:
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
    labels = np.array([0, 2, 0, 2])
    # argmax: 0, 1, 0 (first of tied max), 2 -> correct, wrong, correct, correct.
    np.testing.assert_array_equal(M.correct_mask(logits, labels), [True, False, True, True])
    assert M.id_accuracy(logits, labels) == 0.75
    assert M.id_accuracy(np.array([0, 1, 0, 2]), labels) == 0.75
    assert M.oscr([0.1, 0.2, 0.3, 0.4], M.correct_mask(logits, labels), [1.0]) == 0.75


# --------------------------------------------------------------------------- brute force


def test_fpr_conventions_against_brute_force() -> None:
    rng = np.random.default_rng(3)
    for _ in range(80):
        n_id, n_ood = rng.integers(1, 30, size=2)
        levels = rng.integers(2, 8)
        id_s = rng.integers(0, levels, n_id) / levels
        ood_s = rng.integers(0, levels, n_ood) / levels + rng.choice([0.0, 0.25])
        for tpr in (0.3, 0.8, 0.95, 1.0):
            assert M.fpr_at_tpr(id_s, ood_s, tpr, "id") == _brute_fpr_id(id_s, ood_s, tpr)
            assert M.fpr_at_tpr(id_s, ood_s, tpr, "ood") == _openood_fpr(id_s, ood_s, tpr)
        # Continuous scores: no ties, so OpenOOD's curve gives the plain threshold rule.
        id_c, ood_c = rng.normal(0, 1, n_id), rng.normal(0.5, 1, n_ood)
        for tpr in (0.3, 0.95):
            got = M.fpr_at_tpr(id_c, ood_c, tpr, "ood")
            assert got == _brute_fpr_ood_no_ties(id_c, ood_c, tpr)
        assert abs(M.detection_error(id_s, ood_s) - _brute_detection_error(id_s, ood_s)) < TOL


def test_ccr_and_oscr_against_brute_force() -> None:
    rng = np.random.default_rng(4)
    for _ in range(150):
        n_id, n_ood = rng.integers(1, 25, size=2)
        id_s = rng.integers(0, 5, n_id) / 4
        ood_s = rng.integers(0, 5, n_ood) / 4 + 0.25
        correct = rng.random(n_id) < 0.7
        assert abs(M.oscr(id_s, correct, ood_s) - _brute_oscr(id_s, correct, ood_s)) < TOL
        for fpr in (0.0, 0.1, 0.5, 0.95, 1.0):
            got = M.ccr_at_fpr(id_s, correct, ood_s, fpr)
            assert got == _brute_ccr(id_s, correct, ood_s, fpr)


def test_oscr_equals_accuracy_times_auroc_of_correct_samples() -> None:
    rng = np.random.default_rng(5)
    id_s = np.round(rng.normal(0, 1, 2000), 1)
    ood_s = np.round(rng.normal(1, 1, 1500), 1)
    correct = rng.random(2000) < 0.8
    y_ood, s = _labels(id_s[correct], ood_s)
    expected = correct.mean() * skm.roc_auc_score(y_ood, s)
    assert abs(M.oscr(id_s, correct, ood_s) - expected) < TOL


# --------------------------------------------------------------------------- errors

SCORE_FUNCS = {
    "evaluate": M.evaluate,
    "auroc": M.auroc,
    "aupr_in": M.aupr_in,
    "aupr_out": M.aupr_out,
    "roc_curve": M.roc_curve,
    "detection_error": M.detection_error,
    "fpr_at_tpr": M.fpr_at_tpr,
    "ccr_at_fpr": lambda i, o: M.ccr_at_fpr(i, np.ones(np.size(i), dtype=bool), o, 0.1),
    "oscr": lambda i, o: M.oscr(i, np.ones(np.size(i), dtype=bool), o),
}

BAD_SCORES = {
    "nan": ([0.1, np.nan], "non-finite"),
    "inf": ([0.1, np.inf], "non-finite"),
    "neg_inf": ([-np.inf, 0.2], "non-finite"),
    "empty": (np.array([], dtype=float), "empty"),
    "two_d": (np.zeros((3, 2)), "1-D"),
    "scalar": (np.float64(0.3), "1-D"),
    "strings": (["a", "b"], "real numbers"),
    "object": (np.array([0.1, None], dtype=object), "real numbers"),
    "bool": (np.array([True, False]), "real numbers"),
    "complex": (np.array([1 + 1j, 2.0]), "real numbers"),
}


@pytest.mark.parametrize("func", list(SCORE_FUNCS))
@pytest.mark.parametrize("bad", list(BAD_SCORES))
@pytest.mark.parametrize("which", ["id_scores", "ood_scores"])
def test_bad_scores_raise(func: str, bad: str, which: str) -> None:
    value, message = BAD_SCORES[bad]
    good = [0.2, 0.4, 0.6]
    args = (value, good) if which == "id_scores" else (good, value)
    with pytest.raises(ValueError, match=message) as info:
        SCORE_FUNCS[func](*args)
    assert which in str(info.value)


@pytest.mark.parametrize(
    ("correct", "message"),
    [
        (np.array([True, False]), "one entry per ID sample"),
        (np.array([True, False, True, True]), "one entry per ID sample"),
        (np.array([[True, False, True]]), "one entry per ID sample"),
        (np.array([1, 0, 1]), "boolean"),
        ([1.0, 0.0, 1.0], "boolean"),
    ],
)
@pytest.mark.parametrize("func", ["ccr_at_fpr", "oscr"])
def test_bad_id_correct_raises(correct, message: str, func: str) -> None:
    id_s, ood_s = [0.1, 0.2, 0.3], [0.5]
    with pytest.raises(ValueError, match=message) as info:
        if func == "oscr":
            M.oscr(id_s, correct, ood_s)
        else:
            M.ccr_at_fpr(id_s, correct, ood_s, 0.1)
    assert "id_correct" in str(info.value)


@pytest.mark.parametrize("tpr", [0.0, -0.1, 1.5, 95, np.nan, "high", None])
def test_bad_tpr_raises(tpr) -> None:
    with pytest.raises(ValueError, match="tpr"):
        M.fpr_at_tpr([0.1, 0.2], [0.3], tpr=tpr)


@pytest.mark.parametrize("fpr", [-0.01, 1.01, 5, np.nan, "x"])
def test_bad_fpr_raises(fpr) -> None:
    with pytest.raises(ValueError, match="fpr"):
        M.ccr_at_fpr([0.1], [True], [0.3], fpr)


def test_bad_positive_raises() -> None:
    with pytest.raises(ValueError, match="positive must be 'id' or 'ood'"):
        M.fpr_at_tpr([0.1, 0.2], [0.3], positive="OOD")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pred", "labels", "message"),
    [
        (np.zeros((2, 3)), np.array([0, -1]), "remove OOD samples"),
        (np.zeros((2, 3)), np.array([0, 3]), "number of classes"),
        (np.zeros((2, 3)), np.array([0.0, 1.0]), "labels must hold integer"),
        (np.zeros((2, 3)), np.array([], dtype=int), "non-empty"),
        (np.zeros((2, 3)), np.array([[0, 1]]), "non-empty 1-D"),
        (np.zeros((3, 3)), np.array([0, 1]), "3 samples but labels has 2"),
        (np.array([0, 1, 2]), np.array([0, 1]), "3 samples but labels has 2"),
        (np.array([0.0, 1.0]), np.array([0, 1]), "predicted classes"),
        (np.array([[np.nan, 1.0], [0.0, 1.0]]), np.array([0, 1]), "NaN or inf"),
        (np.array([["a", "b"], ["c", "d"]]), np.array([0, 1]), "numeric"),
        (np.zeros((2, 0)), np.array([0, 1]), "zero classes"),
        (np.zeros((2, 2, 2)), np.array([0, 1]), r"\(N, C\) logits or \(N,\)"),
    ],
)
def test_bad_classification_inputs_raise(pred, labels, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        M.id_accuracy(pred, labels)


def test_module_imports_only_numpy() -> None:
    # the score and open-set metrics; pixel.py (anomaly maps) also uses scipy.ndimage
    imported = set()
    sources = [p.read_text() for p in Path(M.__file__).parent.glob("*.py") if p.name != "pixel.py"]
    for node in (n for source in sources for n in ast.walk(ast.parse(source))):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            imported.add("unseen.metrics" if module.startswith("unseen.metrics.") else module.split(".")[0])
    assert imported <= {"__future__", "typing", "numpy", "unseen.metrics"}, imported


def test_pixel_metrics_import_numpy_and_scipy_only() -> None:
    source = (Path(M.__file__).parent / "pixel.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            imported.add("unseen.metrics" if module.startswith("unseen.metrics.") else module.split(".")[0])
    assert imported <= {"__future__", "collections", "dataclasses", "typing", "numpy", "scipy",
                        "unseen.metrics"}, imported
