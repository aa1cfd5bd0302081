"""Duplicate events (the same ``event_id`` produced twice) counted once
(``window.deduplicate``).

A model's state keeps the ids of the events counted in each pane that can still take
events, as 64-bit hashes, and forgets a pane's when it closes: an event for a closed
pane is late, duplicate or not. A row is a duplicate when an earlier counted row had
its id and that row's pane was still open when this one arrived (judged against the
watermark the row meets, like lateness), so the outcome does not depend on how the
events are batched.

The cost is 8 bytes per event in the open panes, in memory and in each snapshot.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
#: Sorted arrays of hashes a pane keeps before they are merged into one.
_MAX_CHUNKS = 8

Hashes = npt.NDArray[np.uint64]


def id_hashes(ids: Sequence[str]) -> Hashes:
    """64-bit FNV-1a of each id's UTF-8 bytes, then of its length: stable across
    processes (Python's ``hash`` is not), so the hashes can be stored.

    >>> one, = id_hashes(["a"])
    >>> bool((id_hashes(["a", "a", "a much longer id"])[:2] == one).all())
    True
    >>> len(set(id_hashes(["a", "a\\x00", "b"]).tolist()))
    3
    """
    encoded = [i.encode() for i in ids]
    if not encoded:
        return np.zeros(0, dtype=np.uint64)
    matrix = np.array(encoded, dtype=bytes)
    width = matrix.dtype.itemsize
    columns = matrix.view(np.uint8).reshape(len(encoded), width).astype(np.uint64)
    lengths = np.array([len(e) for e in encoded], dtype=np.int64)
    hashes = np.full(len(encoded), _FNV_OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(width):  # only each id's own bytes: not the padding to the widest
            inside = k < lengths
            hashes[inside] = (hashes[inside] ^ columns[inside, k]) * _FNV_PRIME
        hashes ^= lengths.astype(np.uint64)
        hashes *= _FNV_PRIME
    return hashes


class SeenIds:
    """The id hashes of the events counted in each open pane of one model (or segment)."""

    __slots__ = ("_panes", "pane_seconds")

    def __init__(self, pane_seconds: float) -> None:
        self.pane_seconds = pane_seconds
        self._panes: dict[int, list[Hashes]] = {}

    @property
    def size(self) -> int:
        return sum(chunk.size for chunks in self._panes.values() for chunk in chunks)

    def duplicates(
        self,
        ids: Sequence[str],
        panes: npt.NDArray[np.int64],
        watermarks: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.bool_]:
        """Which of these on-time rows (in arrival order, in ``panes``, each meeting the
        watermark in ``watermarks``) are duplicates; the others are remembered."""
        hashes = id_hashes(ids)
        # The end of the pane of the latest counted row with each row's id, known before
        # this batch (-inf: none, or only in panes closed since).
        seen_end = np.full(len(ids), -np.inf)
        for pane, chunks in self._panes.items():
            end = (pane + 1) * self.pane_seconds
            for chunk in chunks:
                at = np.minimum(np.searchsorted(chunk, hashes), chunk.size - 1)
                found = chunk[at] == hashes
                seen_end[found] = np.maximum(seen_end[found], end)
        duplicate = seen_end > watermarks
        # Ids repeated within the batch: in order, each against the last counted one.
        unique, first, counts = np.unique(hashes, return_index=True, return_counts=True)
        for value, position in zip(unique[counts > 1], first[counts > 1], strict=True):
            latest = seen_end[position]
            for i in np.flatnonzero(hashes == value):
                if latest > watermarks[i]:
                    duplicate[i] = True
                else:
                    duplicate[i] = False
                    latest = (panes[i] + 1) * self.pane_seconds
        kept = ~duplicate
        for pane in np.unique(panes[kept]):
            new = np.unique(hashes[kept & (panes == pane)])
            chunks = self._panes.setdefault(int(pane), [])
            chunks.append(new)
            if len(chunks) > _MAX_CHUNKS:
                self._panes[int(pane)] = [np.unique(np.concatenate(chunks))]
        return duplicate

    def checkpoint(self) -> dict[int, list[Hashes]]:
        """What ``rollback`` needs (the hash arrays are never changed in place)."""
        return {pane: list(chunks) for pane, chunks in self._panes.items()}

    def rollback(self, checkpoint: dict[int, list[Hashes]]) -> None:
        self._panes = checkpoint

    def forget_through(self, pane: int | None) -> None:
        """Forget the panes up to ``pane`` (closed: their events are late now)."""
        if pane is not None:
            for index in [p for p in self._panes if p <= pane]:
                del self._panes[index]

    def to_state(self) -> dict[str, str]:
        return {
            str(pane): base64.b64encode(np.unique(np.concatenate(chunks)).tobytes()).decode()
            for pane, chunks in self._panes.items()
        }

    def restore(self, state: dict[str, Any]) -> None:
        self._panes = {
            int(pane): [np.frombuffer(base64.b64decode(data), dtype=np.uint64).copy()]
            for pane, data in state.items()
        }
