"""CLINC150 (Larson et al., EMNLP-IJCNLP 2019): 150 in-scope intents plus out-of-scope queries.

The bundle's ``data_full.json`` is a dict of six splits, each a list of ``[utterance, intent]``
pairs: ``train`` / ``val`` / ``test`` (in scope, 100 / 20 / 30 per intent) and ``oos_train`` /
``oos_val`` / ``oos_test`` (intent ``"oos"``). Intent indices follow the sorted names of the
training set's intents; out-of-scope queries are labelled -1.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: the file below an unpacked bundle
CLINC_FILE = "clinc150_oos/data/data_full.json"
IN_SCOPE = ("train", "val", "test")
OUT_OF_SCOPE = ("oos_train", "oos_val", "oos_test")
OOS = "oos"


@dataclass(frozen=True)
class TextSplit:
    """Utterances and their labels (intent index >= 0, or -1 for out-of-scope)."""

    texts: list[str]
    labels: np.ndarray


def load_clinc150(path: str | os.PathLike[str]) -> tuple[dict[str, TextSplit], list[str]]:
    """The six splits of ``data_full.json`` and the sorted intent names (index = label)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read CLINC150 from {path}: {exc}") from None
    missing = [s for s in (*IN_SCOPE, *OUT_OF_SCOPE) if s not in raw]
    if missing:
        raise ValueError(f"{path} lacks the split(s) {missing}; expected CLINC150's data_full.json")
    intents = sorted({intent for _, intent in raw["train"]})
    if OOS in intents:
        raise ValueError(f"{path}: the training split contains out-of-scope ('oos') queries")
    index = {name: i for i, name in enumerate(intents)}
    splits = {}
    for name in (*IN_SCOPE, *OUT_OF_SCOPE):
        pairs = raw[name]
        bad = [intent for _, intent in pairs if intent not in index and intent != OOS]
        if bad:
            raise ValueError(f"{path}: split {name!r} has intents not in train, e.g. {bad[0]!r}")
        labels = np.array([index.get(intent, -1) for _, intent in pairs], dtype=np.int64)
        if (name in IN_SCOPE) == bool((labels < 0).any()):
            raise ValueError(f"{path}: split {name!r} mixes in-scope and out-of-scope queries")
        splits[name] = TextSplit([str(t) for t, _ in pairs], labels)
    return splits, intents
