"""Open-set recognition metrics: closed-set accuracy, CCR at a given FPR, and OSCR.

Dhamija, Günther and Boult, "Reducing Network Agnostophobia", NeurIPS 2018. Same convention as
:mod:`unseen.metrics.scores`: higher score = more likely unknown.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from unseen.metrics.scores import _correct, _integers, _rate, _scores

__all__ = ["ccr_at_fpr", "correct_mask", "id_accuracy", "oscr"]


# --------------------------------------------------------------------------- classification


def correct_mask(logits_or_predictions: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """Boolean array: is each ID sample classified correctly?

    ``logits_or_predictions`` is either (N, C) logits/probabilities (prediction = argmax,
    first index on ties) or (N,) integer predicted classes; ``labels`` are (N,) integer
    class indices >= 0 (filter out OOD samples, label -1, first).
    """
    y = _integers(labels, "labels")
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {y.shape}")
    if (y < 0).any():
        raise ValueError(
            "labels must be ID class indices >= 0; remove OOD samples (label -1) first"
        )
    pred = np.asarray(logits_or_predictions)
    if pred.ndim == 2:
        if pred.dtype == np.bool_ or not np.issubdtype(pred.dtype, np.number):
            raise ValueError(f"logits must be numeric, got dtype {pred.dtype}")
        if pred.shape[1] == 0:
            raise ValueError("logits have zero classes (shape (N, 0))")
        if not np.isfinite(pred).all():
            raise ValueError("logits contain NaN or inf")
        if (y >= pred.shape[1]).any():
            raise ValueError(
                f"labels must be < the number of classes ({pred.shape[1]}), "
                f"got max label {int(y.max())}"
            )
        pred = pred.argmax(axis=1)
    elif pred.ndim == 1:
        pred = _integers(pred, "logits_or_predictions (1-D predicted classes)")
    else:
        raise ValueError(
            "logits_or_predictions must be (N, C) logits or (N,) predicted classes, "
            f"got shape {pred.shape}"
        )
    if pred.shape[0] != y.size:
        raise ValueError(
            f"logits_or_predictions has {pred.shape[0]} samples but labels has {y.size}"
        )
    return pred == y


def id_accuracy(logits_or_predictions: ArrayLike, labels: ArrayLike) -> float:
    """Closed-set accuracy on ID samples; inputs as for :func:`correct_mask`."""
    return float(np.mean(correct_mask(logits_or_predictions, labels)))


# --------------------------------------------------------------------------- open-set


def ccr_at_fpr(
    id_scores: ArrayLike, id_correct: ArrayLike, ood_scores: ArrayLike, fpr: float
) -> float:
    """Correct classification rate at a false-positive rate (Dhamija et al., NeurIPS 2018).

    A sample is accepted iff its score is below a threshold. CCR(t) is the fraction of
    *all* ID samples that are both accepted and correctly classified; FPR(t) is the
    fraction of OOD samples accepted. Returns the largest CCR(t) over thresholds with
    FPR(t) <= ``fpr`` (compared as ``k / n_ood <= fpr`` in float64). Concretely, with
    ``m`` the largest count such that ``m / n_ood <= fpr`` and ``v`` the (m+1)-th smallest
    OOD score, ID samples with score ``< v`` are accepted (all of them when m = n_ood).
    OOD samples tied with ``v`` are never accepted, so ties can only lower the CCR.

    OpenOOD's ``ccr_fpr`` differs: it cuts at the ``ceil(fpr * n_ood)``-th most ID-like OOD
    sample and accepts only ID samples strictly beyond it, so at most
    ``ceil(fpr * n_ood) - 1`` OOD samples are accepted (one fewer than here when
    ``fpr * n_ood`` is a whole number).
    """
    rate = _rate(fpr, "fpr", allow_zero=True)
    scores = _scores(id_scores, "id_scores")
    correct = _correct(id_correct, scores.size)
    ood = np.sort(_scores(ood_scores, "ood_scores"))
    m = int(np.searchsorted(np.arange(ood.size + 1) / ood.size, rate, side="right")) - 1
    if m == ood.size:
        accepted = np.ones(scores.size, dtype=bool)
    else:
        accepted = scores < ood[m]
    return float(np.count_nonzero(accepted & correct) / scores.size)


def oscr(id_scores: ArrayLike, id_correct: ArrayLike, ood_scores: ArrayLike) -> float:
    """Open-Set Classification Rate: area under the CCR-versus-FPR curve.

    Dhamija et al. (NeurIPS 2018) define the curve; Chen et al. (ECCV 2020, ARPL) and Vaze
    et al. ("Open-set recognition: a good closed-set classifier is all you need", ICLR
    2022) report its area. The curve joins the operating points (FPR(t), CCR(t)) of
    :func:`ccr_at_fpr` for every threshold between distinct scores, from (0, 0) to
    (1, accuracy), by straight lines; a group of tied samples therefore gives a diagonal
    segment, i.e. half credit, as in AUROC. The area equals::

        (1 / (n_id n_ood)) * sum over correct ID i, OOD j of [s_i < s_j] + 0.5 [s_i == s_j]

    which is accuracy x AUROC(correctly classified ID vs OOD).

    The reference ``compute_oscr`` loop of ARPL/Vaze et al. sorts by score with
    ``argsort`` (so tied samples are split in arbitrary order rather than credited one
    half), puts the point of the top-ranked sample at (0, 0), counts the sample at the
    cut as accepted for FPR but not for CCR, and adds an endpoint (1, 1). On large sets
    its value agrees with this one to O(1/n); on tiny sets it is lower (two perfectly
    separated samples give 0.5 there and 1.0 here).
    """
    scores = _scores(id_scores, "id_scores")
    correct = _correct(id_correct, scores.size)
    # Sorted queries make searchsorted cache-friendly (several times faster at 10^6).
    ood = np.sort(_scores(ood_scores, "ood_scores"))
    good = np.sort(scores[correct])
    below = np.searchsorted(good, ood, side="left").astype(np.int64)
    at_or_below = np.searchsorted(good, ood, side="right").astype(np.int64)
    twice_pairs = int(np.sum(below + at_or_below))
    return twice_pairs / (2.0 * scores.size * ood.size)
