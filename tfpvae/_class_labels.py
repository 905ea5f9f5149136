"""How figures order and caption the classes of labelled images."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["class_name", "distinct_classes"]


def distinct_classes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct labels in natural order, and the index of each one's first image.

    Numbers sort as numbers, and so do runs of digits in strings: labels read from a file
    as "0" to "11" come as 0, 1, 2, ..., 10, 11, not 0, 1, 10, 11, 2, ...

    Args:
      labels: array (n,) of numbers or strings.

    Returns:
      (classes, first): arrays (k,) of the k distinct labels and of the row where each first occurs.

    Examples:
      >>> distinct_classes(np.array(["b10", "b2", "a", "b2"]))
      (array(['a', 'b2', 'b10'], dtype='<U3'), array([2, 1, 0]))
    """
    found, first = np.unique(labels, return_index=True)
    if found.dtype.kind in "US":  # np.unique sorts strings character by character
        order = sorted(range(len(found)), key=lambda i: _natural_key(str(found[i])))
        found, first = found[order], first[order]
    return found, first


def _natural_key(text: str) -> list[tuple[int, int | str]]:
    # Runs of digits compare as numbers; (0, n) before (1, text) keeps the types apart.
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text) if part]


def class_name(label: Any, class_names: Mapping[Any, str] | None) -> str:
    """The caption of a class: its entry in `class_names` if it has one, else the label itself."""
    key = label.item() if hasattr(label, "item") else label
    return str(class_names[key] if class_names is not None and key in class_names else key)
