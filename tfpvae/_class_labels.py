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
      labels: array (n,) of numbers or strings (str, bytes, or an object array of str).

    Returns:
      (classes, first): arrays (k,) of the k distinct labels and of the row where each first occurs.

    Examples:
      >>> distinct_classes(np.array(["b10", "b2", "a", "b2"]))
      (array(['a', 'b2', 'b10'], dtype='<U3'), array([2, 1, 0]))
    """
    found, first = np.unique(labels, return_index=True)
    # np.unique sorts strings character by character; an object array of str too (a pandas column).
    if found.dtype.kind in "US" or (found.dtype.kind == "O" and all(isinstance(v, str) for v in found)):
        order = sorted(range(len(found)), key=lambda i: _natural_key(str(found[i])))
        found, first = found[order], first[order]
    return found, first


def _natural_key(text: str) -> list[tuple[int, str]]:
    """Text in runs: each run of digits (the odd parts of the split) compares as a number, by
    its length without leading zeros, then its digits; no int() (it refuses runs over 4300
    digits). (0, ...) before (1, ...) keeps numbers and text apart."""
    key = []
    for i, part in enumerate(re.split(r"(\d+)", text)):
        if i % 2:
            digits = part.lstrip("0")
            key.append((0, f"{len(digits):09d}{digits}"))
        elif part:
            key.append((1, part))
    return key


def class_name(label: Any, class_names: Mapping[Any, str] | None) -> str:
    """The caption of a class: its entry in `class_names` if it has one, else the label itself.

    Args:
      label: one class label (a number, a string or a numpy scalar).
      class_names: captions by label, e.g. {0: "T-shirt"}; None: the labels themselves.

    Returns:
      the caption, a str.
    """
    key = label.item() if hasattr(label, "item") else label
    return str(class_names[key] if class_names is not None and key in class_names else key)
