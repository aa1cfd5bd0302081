"""Monitors and references as the API, the CLI and the workers share them.

The store's ``monitors`` table is the registry: the monitors file seeds it at worker
start, the API and CLI change it, and workers poll it and apply what changed.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from driftline.exceptions import InvalidMonitor, ReferenceDataError
from driftline.monitoring import Monitor, calibrate, profile_file
from driftline.schemas.monitors import (
    FeatureSpec,
    LabelsSpec,
    MonitorSpec,
    Target,
    describe_config_error,
)
from driftline.store import Store
from driftline.store.repository import MonitorRecord

PARQUET_MAGIC = b"PAR1"
log = logging.getLogger(__name__)


def stored_monitor_spec(body: Any, *, tenant: str, topic_prefix: str) -> MonitorSpec:
    """A monitor spec to store, as the API (``POST``/``PUT /v1/monitors``) and
    ``driftline monitors apply`` take it: one set of checks, one set of messages.

    ``tenant`` is the default owner. The reference must be a stored profile (a file is
    uploaded to ``/v1/monitors/{id}/references`` or built with ``driftline reference
    build``); the features must be listed (a reference is built for them); a webhook
    secret comes from ``secret_env``, since a stored spec never holds a secret (an
    inline one would be stored masked and the monitor could never sign). Raises
    ``InvalidMonitor`` naming the field.
    """
    if not isinstance(body, dict):
        raise InvalidMonitor("body: a monitor spec object")
    body = {"tenant": tenant, "reference": {"stored": "latest"}, **body}
    try:
        spec = MonitorSpec.model_validate(body, context={"topic_prefix": topic_prefix})
    except ValidationError as exc:
        raise InvalidMonitor(describe_config_error(exc)) from None
    if spec.reference.path is not None:
        raise InvalidMonitor(
            "reference.path: upload the file to /v1/monitors/{model_id}/references (or "
            "`driftline reference build`), then use reference.stored"
        )
    if not spec.features:
        raise InvalidMonitor("features: list the monitored features")
    for i, target in enumerate(spec.targets):
        if target.type == "webhook" and target.secret_env is None:
            raise InvalidMonitor(f"targets[{i}].secret: secrets are not stored; use secret_env")
    return spec


#: What tells one version of a monitor from another: its number, and when it was made
#: (a monitor deleted and made again starts at version 1 again).
RecordKey = tuple[int, datetime]


def registry_changes(
    known: Mapping[str, RecordKey], records: Sequence[MonitorRecord]
) -> tuple[list[MonitorRecord], set[str]]:
    """The records new or changed since ``known`` (a worker's last look), and the model
    ids no longer in the registry.

    >>> from datetime import UTC
    >>> first, then = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    >>> again = MonitorRecord("m", "team-b", "api", False, 1, {}, None, then)
    >>> [r.tenant for r in registry_changes({"m": (1, first)}, [again])[0]]
    ['team-b']
    >>> registry_changes({"m": (1, first), "gone": (3, first)}, [again])[1]
    {'gone'}
    """
    changed = [r for r in records if known.get(r.model_id) != record_key(r)]
    return changed, set(known) - {r.model_id for r in records}


def record_key(record: MonitorRecord) -> RecordKey:
    return record.version, record.updated_at


_TARGET = TypeAdapter(Target)


def target_labels(specs: Iterable[Mapping[str, Any]], topic_prefix: str) -> set[tuple[str, str]]:
    """The (type, label) of every target of these stored specs (their metrics' labels),
    read without their secrets."""
    context = {"resolve_secrets": False, "topic_prefix": topic_prefix}
    labels: set[tuple[str, str]] = set()
    for spec in specs:
        for raw in spec.get("targets") or []:
            try:
                target = _TARGET.validate_python(raw, context=context)
            except ValidationError:
                continue
            labels.add((target.type, target.label))
    return labels


def monitor_of(
    record: MonitorRecord, store: Store, file_specs: Mapping[str, MonitorSpec]
) -> Monitor | None:
    """The runnable monitor of a record; None while it has no reference profile.

    Monitors of the file run the file's spec (it holds secrets the store never does);
    API monitors run the stored spec.
    """
    spec = file_specs.get(record.model_id) if record.source == "file" else None
    if spec is None:
        spec = MonitorSpec.model_validate(record.spec)
    if record.reference_version is None:
        return None
    loaded = store.load_profile(record.model_id, record.reference_version)
    if loaded is None:
        return None
    version, profile = loaded
    if spec.labels is not None and profile.outcomes is None:
        raise ReferenceDataError(
            f"model {spec.model_id}: reference version {version} was built without labels; "
            "build it again from data with the label (and prediction) columns"
        )
    features = tuple(spec.features or ())
    if [f.name for f in features] != [f.name for f in profile.features]:
        raise ReferenceDataError(
            f"model {spec.model_id}: its features {[f.name for f in features]} are not "
            f"those of reference version {version} ({[f.name for f in profile.features]})"
        )
    profile = calibrate(profile, spec.thresholds)
    return Monitor(spec, features, profile, version, record.created_at, record_key(record))


def runnable(
    record: MonitorRecord, store: Store, file_specs: Mapping[str, MonitorSpec]
) -> Monitor | None:
    """The monitor a worker should run for a record: None if paused, without a reference
    profile, or broken (logged: one bad monitor must not stop the others)."""
    if record.paused:
        return None
    try:
        monitor = monitor_of(record, store, file_specs)
    except (ReferenceDataError, ValidationError) as exc:
        log.error("monitor %s (version %d) cannot run: %s", record.model_id, record.version, exc)
        return None
    if monitor is None:
        log.info("monitor %s waits for a reference profile", record.model_id)
    return monitor


def labels_of(record: MonitorRecord) -> LabelsSpec | None:
    """A stored monitor's labels section (without validating the rest: its targets may
    name secrets this process does not have)."""
    labels = record.spec.get("labels")
    return None if labels is None else LabelsSpec.model_validate(labels)


def build_reference(
    store: Store,
    model_id: str,
    features: Sequence[FeatureSpec],
    data: bytes | Path,
    source: str,
    now: datetime,
    labels: LabelsSpec | None = None,
) -> int:
    """Profile a Parquet or CSV file (a path, or its bytes) for the monitor's features (and
    labels) and store it; returns its version (an identical profile keeps its version).

    The API and ``driftline reference build`` both come here, so the same file gives the
    same profile and version either way.
    """
    if not features:
        raise ReferenceDataError(f"model {model_id}: list its features to build a reference")
    if isinstance(data, Path):
        _, profile = profile_file(data, features, labels=labels)
    else:
        suffix = ".parquet" if data[:4] == PARQUET_MAGIC else ".csv"
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / f"reference{suffix}"
            path.write_bytes(data)
            _, profile = profile_file(path, features, labels=labels)
    return store.save_profile(model_id, profile, source, now)
