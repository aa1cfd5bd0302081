"""Concept-drift detection over per-prediction losses, with river's detectors.

river's ADWIN and Page-Hinkley do the detecting. Their internal state is not plain data
(ADWIN's is a compiled object), and unpickling from the database would let whoever can
write it run code. So a snapshot keeps the losses the detector's current state depends
on instead: the values since its last detection, up to ``memory`` of them; restoring
replays them into a fresh detector. Exact while fewer than ``memory`` values have
arrived since the start (the common case before a first drift); after a detection,
ADWIN's compressed buckets are rebuilt from the raw values it kept, which can differ
slightly (the tests check that detections still match); past ``memory`` values the
detector restarts from the newest ``memory``. ``stream/outcomes.py`` runs it per model.
"""

from __future__ import annotations

import base64
import copy
from collections import deque
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np

Kind = Literal["adwin", "page_hinkley"]
#: Defaults chosen for per-prediction 0/1 or log losses: no alarm over 100k stationary
#: predictions in the tests, and detection within a few thousand after a flip.
DEFAULTS: dict[str, dict[str, Any]] = {
    # clock=1: checked at every value, so a restored detector is not out of phase.
    "adwin": {"delta": 1e-5, "clock": 1},
    "page_hinkley": {"delta": 0.05, "threshold": 50.0, "alpha": 1.0, "mode": "up"},
}


def _detector(kind: Kind, params: dict[str, Any]) -> Any:
    from river import drift  # imported on use: only monitors with concept drift need it

    if kind == "adwin":
        return drift.ADWIN(**params)  # type: ignore[no-untyped-call]
    if kind == "page_hinkley":
        return drift.PageHinkley(**params)
    raise ValueError(f"unknown concept-drift detector {kind!r}; use adwin or page_hinkley")


class ConceptDriftDetector:
    """Feeds losses to a river detector; remembers what is needed to restore it.

    Only a change for the worse counts: the loss going up. ADWIN finds a change in
    either direction; a detection after which the kept (recent) window's mean loss is
    below the dropped (older) part's is an improvement, counted in ``improvements``
    and not reported. Page-Hinkley runs in river's ``mode: up`` (increases only).

    >>> detector = ConceptDriftDetector("adwin")
    >>> detector.update([0.0] * 2000 + [1.0] * 500)[:1]
    [2013]
    >>> restored = ConceptDriftDetector.from_state(detector.to_state())
    >>> restored.detections, restored.update([1.0] * 10)
    (1, [])
    >>> better = ConceptDriftDetector("adwin")
    >>> better.update([1.0] * 2000 + [0.0] * 500), better.improvements
    ([], 1)
    """

    def __init__(
        self, kind: Kind = "adwin", params: dict[str, Any] | None = None, memory: int = 10_000
    ) -> None:
        self.kind: Kind = kind
        self.params = {**DEFAULTS[kind], **(params or {})}
        self.memory = memory
        #: Changes for the worse (the loss went up): what degrades a performance window.
        self.detections = 0
        #: Changes for the better (ADWIN only): recorded, never a degradation.
        self.improvements = 0
        self._detector = _detector(kind, self.params)
        self._since_detection: deque[float] = deque(maxlen=memory)

    def update(self, losses: Iterable[float]) -> list[int]:
        """Feed losses in order; the positions at which drift was detected."""
        hits = []
        adwin = self.kind == "adwin"
        for i, loss in enumerate(losses):
            value = float(loss)
            if adwin:
                total, width = self._detector.total, self._detector.width
            self._detector.update(value)
            self._since_detection.append(value)
            if self._detector.drift_detected:
                if not adwin or self._worse(total + value, width + 1):
                    hits.append(i)
                    self.detections += 1
                else:
                    self.improvements += 1
                self._forget()
        return hits

    def _worse(self, total: float, width: float) -> bool:
        """Whether ADWIN's cut (from ``width`` values summing to ``total``) left a window
        of higher mean loss than the part it dropped."""
        kept_total, kept = float(self._detector.total), float(self._detector.width)
        dropped = width - kept
        if dropped <= 0 or kept <= 0:
            return True
        return kept_total / kept > (total - kept_total) / dropped

    def _forget(self) -> None:
        """After a detection, keep only what the detector still holds."""
        if self.kind == "adwin":  # ADWIN keeps the window after its cut
            width = int(self._detector.width)
            kept = list(self._since_detection)[-width:] if width else []
            self._since_detection = deque(kept, maxlen=self.memory)
        else:  # Page-Hinkley starts over
            self._since_detection.clear()

    def checkpoint(self) -> tuple[int, int, tuple[float, ...], Any]:
        """What ``rollback`` needs: the counts, the losses kept, and a copy of river's
        detector (its state is small: a copy takes about 15 us)."""
        return (
            self.detections,
            self.improvements,
            tuple(self._since_detection),
            copy.deepcopy(self._detector),
        )

    def rollback(self, checkpoint: tuple[int, int, tuple[float, ...], Any]) -> None:
        """Back to ``checkpoint``, exactly."""
        detections, improvements, values, detector = checkpoint
        self._detector = detector
        self._since_detection = deque(values, maxlen=self.memory)
        self.detections, self.improvements = detections, improvements

    @property
    def estimation(self) -> float | None:
        """ADWIN's current mean loss (None for Page-Hinkley)."""
        return float(self._detector.estimation) if self.kind == "adwin" else None

    def to_state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "params": self.params,
            "memory": self.memory,
            "detections": self.detections,
            "improvements": self.improvements,
            # float32, base64: 10,000 losses are 53 KB of JSON, and no code runs on load.
            "values": base64.b64encode(
                np.asarray(self._since_detection, dtype="<f4").tobytes()
            ).decode(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ConceptDriftDetector:
        detector = cls(state["kind"], state["params"], int(state["memory"]))
        values = np.frombuffer(base64.b64decode(state["values"]), dtype="<f4")
        for value in values.tolist():  # replayed: detections during it are not new
            detector._detector.update(float(value))
        # The same values as saved, so saving again and restoring again gives this state.
        detector._since_detection.extend(values.tolist())
        detector.detections = int(state["detections"])
        detector.improvements = int(state.get("improvements", 0))  # older snapshots lack it
        return detector
