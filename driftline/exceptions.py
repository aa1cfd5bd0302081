"""The one exception hierarchy of driftline.

Every message says what was wrong and how to fix it.
"""

from __future__ import annotations


class DriftlineError(Exception):
    """Base class of every error driftline raises on purpose."""


class ConfigError(DriftlineError):
    """Invalid settings or monitors configuration; raised at startup."""


class InvalidMonitor(ConfigError):
    """A monitor spec given to the API or ``driftline monitors apply`` is refused; the
    message names the field (the same message either way)."""


class ReferenceDataError(DriftlineError):
    """A reference or current data file cannot be read or does not fit the monitor."""


class EventValidationError(DriftlineError):
    """An event does not match the schema or its monitor; it goes to the dead-letter topic.

    ``reason`` is a short machine-readable code (``decode``, ``schema``,
    ``feature_type``, ``late``); the message is for people.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class StoreError(DriftlineError):
    """The database could not be reached or rejected a write."""


class DeliveryError(DriftlineError):
    """A retraining event could not be delivered to a target."""


class BrokerError(DriftlineError):
    """The Kafka broker (embedded or external) could not be started or reached."""


class PartitionTaken(StoreError):
    """Another worker stored a partition's offsets since this one last read or wrote them:
    the partition is that worker's now (this one was out of its group)."""
