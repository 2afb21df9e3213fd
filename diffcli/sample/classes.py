"""Conditional sampling: which class each sample of a run is drawn from (`diffcli sample --class`).

--class C, where C is one label (`3`), several (`3,5`: sample i gets classes[i % len]), `all` (every class with
training rows, cycled: a balanced sweep) or a class name where the index has names (folder names, CIFAR-10 names;
a name is matched before a number, case-insensitively when no exact name matches).
"""

from __future__ import annotations

import numpy as np

from diffcli.errors import UsageError
from diffcli.index.store import Index, class_names

CLASS_FORMS = "a label (3), labels cycled over the samples (3,5), all (a balanced sweep) or a class name"


def _choices(present, names) -> str:
    shown = [f"{k} ({names[k]})" if names is not None and k < len(names) else str(k) for k in present]
    if len(shown) > 12:
        shown = shown[:12] + ["..."]
    return ", ".join(shown) + ", all"


def parse_classes(spec: str, index: Index) -> list[int]:
    """The class ids `spec` names, in order (repeats kept); anything unknown is one sentence (UsageError)."""
    if index.labels is None:
        dataset = index.attrs.get("dataset") or "this index"
        raise UsageError(f"--class needs a labelled index, and '{dataset}' has no labels.")
    present = [int(k) for k in np.unique(index.labels)]
    names = class_names(index.attrs)
    text = str(spec).strip()
    if text.lower() == "all":
        return present
    out = []
    for token in (t.strip() for t in text.split(",")):
        label = None
        if names is not None:
            if token in names:
                label = names.index(token)
            else:
                folded = [n.lower() for n in names]
                label = folded.index(token.lower()) if token.lower() in folded else None
        if label is None and token.lstrip("-").isdigit():
            label = int(token)
        if label is None or label not in present:
            raise UsageError(f"unknown class '{token}' for this index; choose from: {_choices(present, names)}.")
        out.append(label)
    return out


def sample_labels(spec: str, index: Index, n: int) -> np.ndarray:
    """The class of each sample 0..n-1 of the run: classes[i % len(classes)]."""
    classes = np.asarray(parse_classes(spec, index), np.int64)
    return classes[np.arange(n) % len(classes)]
