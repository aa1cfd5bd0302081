"""How raw values of events and data files are read as categories (one rule everywhere)."""

from __future__ import annotations

from typing import Any


def category_label(value: Any) -> str | None:
    """The category string of a raw value: ``True`` -> ``"true"``, ``3.0`` -> ``"3"``.

    Events, reference files and the monitors file (``labels.classes``) all name a
    category this way, so a label sent as ``1`` is the class ``1`` listed as ``1`` or
    ``"1"``.

    >>> [category_label(v) for v in (True, 3, 3.0, 2.5, "x", None)]
    ['true', '3', '3', '2.5', 'x', None]
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
