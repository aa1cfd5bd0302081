"""Events on the wire: JSON, one ``PredictionEvent`` or one ``EventBatch`` per Kafka message.

The Kafka key is the ``model_id``; the body is authoritative.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from operator import attrgetter
from typing import Annotated, Any, ClassVar, Protocol

import msgspec
import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

#: Epoch seconds above this are almost certainly milliseconds (year 5138).
_MAX_EPOCH_SECONDS = 1e11

FeatureValue = StrictFloat | StrictInt | StrictBool | StrictStr | None


def parse_timestamp(value: Any) -> float:
    """Event time as epoch seconds, from an RFC 3339 string or a number of epoch seconds.

    >>> parse_timestamp("2024-05-01T12:00:00Z")
    1714564800.0
    >>> parse_timestamp(1714564800)
    1714564800.0
    """
    if isinstance(value, bool):
        raise ValueError("ts must be an RFC 3339 string or epoch seconds, not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ValueError("ts must be a finite number of epoch seconds")
        if abs(seconds) > _MAX_EPOCH_SECONDS:
            raise ValueError(f"ts {value} looks like milliseconds; send epoch seconds")
        return seconds
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"ts {value!r} is not an RFC 3339 timestamp") from None
        if moment.tzinfo is None:
            raise ValueError(f"ts {value!r} has no UTC offset; RFC 3339 needs one (e.g. 'Z')")
        return moment.timestamp()
    raise ValueError("ts must be an RFC 3339 string or epoch seconds")


EventTime = Annotated[float, BeforeValidator(parse_timestamp)]
Identifier = Annotated[str, Field(min_length=1, max_length=256)]


LabelValue = StrictFloat | StrictInt | StrictBool | StrictStr


class EventRow(BaseModel):
    """One prediction inside an ``EventBatch`` (the batch carries the model).

    ``label``, when the truth is known as the prediction is made (a backfill), joins
    it at once, as a label event for this ``event_id`` would.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: Identifier
    ts: EventTime
    features: dict[str, FeatureValue]
    prediction: LabelValue | None = None
    segment: Identifier | None = None
    label: LabelValue | None = None


class PredictionRow(Protocol):
    """What the stream reads of a valid prediction: an ``EventRow``, or a ``FastRow``."""

    @property
    def event_id(self) -> str: ...
    @property
    def ts(self) -> float: ...
    @property
    def features(self) -> Mapping[str, float | int | bool | str | None]: ...
    @property
    def prediction(self) -> float | int | bool | str | None: ...
    @property
    def segment(self) -> str | None: ...
    @property
    def label(self) -> float | int | bool | str | None: ...


_Scalar = float | int | bool | str | None
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class WireRow(msgspec.Struct, frozen=True, gc=False):
    """A prediction decoded by msgspec straight from the bytes (the fast path).

    It accepts only what ``EventRow`` accepts, in a narrower form (``ts`` in epoch
    seconds); anything else takes the slow path, which names the problem. No cycles
    (scalars only), so out of the garbage collector's sight (``gc=False``).
    """

    def model_dump(self, mode: str = "json") -> dict[str, Any]:
        """As ``EventRow.model_dump``: for a dead letter."""
        return {f: getattr(self, f) for f in _ROW_FIELDS}


_ROW_FIELDS = ("event_id", "ts", "features", "prediction", "segment", "label")


class FastRow(WireRow, frozen=True, gc=False):
    """A valid prediction whose features are any scalars."""

    event_id: _Id
    ts: float
    features: dict[str, _Scalar]
    prediction: _Scalar = None
    segment: _Id | None = None
    label: _Scalar = None

    def __post_init__(self) -> None:
        if abs(self.ts) > _MAX_EPOCH_SECONDS:  # msgspec refuses non-finite numbers
            raise ValueError("ts looks like milliseconds")


class NumericRow(WireRow, frozen=True, gc=False):
    """A valid prediction whose features are all numbers (as floats) or null: its
    columns need no type check."""

    event_id: _Id
    ts: float
    features: dict[str, float | None]
    prediction: _Scalar = None
    segment: _Id | None = None
    label: _Scalar = None

    def __post_init__(self) -> None:
        if abs(self.ts) > _MAX_EPOCH_SECONDS:
            raise ValueError("ts looks like milliseconds")


class _FastEvent(FastRow, frozen=True, gc=False):
    model_id: _Id = ""
    model_version: _Id | None = None


class _NumericEvent(NumericRow, frozen=True, gc=False):
    model_id: _Id = ""
    model_version: _Id | None = None


class _FastBatch(msgspec.Struct, frozen=True, gc=False):
    model_id: _Id
    events: list[FastRow]
    model_version: _Id | None = None


class _NumericBatch(msgspec.Struct, frozen=True, gc=False):
    model_id: _Id
    events: list[NumericRow]
    model_version: _Id | None = None


class TypedFeatures(msgspec.Struct, frozen=True, gc=False):
    """Base of one model's features decoded into a struct of its own (``TypedDecoder``):
    its monitored numeric features as fields, in the monitor's order, each a float or None
    (missing or null, as ``dict.get`` reads them); other features are skipped unread.

    Read like the mapping it replaces, by feature name.
    """

    #: Field of each feature name (fields are ``f0, f1, ..``: names need not be identifiers).
    _fields: ClassVar[dict[str, str]] = {}

    def __getitem__(self, name: str) -> float | None:
        return getattr(self, self._fields[name])  # type: ignore[no-any-return]

    def get(self, name: str, default: Any = None) -> Any:
        field_name = self._fields.get(name)
        return default if field_name is None else getattr(self, field_name)


class TypedRow(WireRow, frozen=True, gc=False):
    """A valid prediction decoded by its model's ``TypedDecoder``: ``features`` is a
    ``TypedFeatures``. Only the monitored features were read, so a dead letter of it takes
    the row from the message's bytes (``deadletter.one_row``). Its ``ts`` is checked once
    for the whole message (``_decode_typed``)."""


class TypedDecoder:
    """The fastest path, for a model whose monitored features are all numeric: its messages
    decoded with the features straight into a struct of its own (no dict per row, only
    the monitored features read), chosen by the message's Kafka key (``model_id``).

    A message it decodes is one ``NumericRow``'s decoders would accept, for this model; the
    rest goes to them.
    """

    __slots__ = ("batch", "event", "features", "model_id", "names")

    def __init__(self, model_id: str, names: Sequence[str]) -> None:
        self.model_id = model_id
        self.names = tuple(names)
        fields = [f"f{i}" for i in range(len(names))]
        self.features: type[Any] = msgspec.defstruct(
            "Features",
            [(f, float | None, None) for f in fields],
            bases=(TypedFeatures,),
            namespace={"_fields": dict(zip(names, fields, strict=True))},
            rename=dict(zip(fields, names, strict=True)),
            frozen=True,
            gc=False,
        )
        row_fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [
            ("event_id", _Id),
            ("ts", float),
            ("features", self.features),
            ("prediction", _Scalar, None),
            ("segment", _Id | None, None),
            ("label", _Scalar, None),
        ]
        row = msgspec.defstruct("Row", row_fields, bases=(TypedRow,), frozen=True, gc=False)
        event = msgspec.defstruct(
            "Event",
            [("model_id", _Id, ""), ("model_version", _Id | None, None)],
            bases=(row,),
            frozen=True,
            gc=False,
        )
        batch = msgspec.defstruct(
            "Batch",
            [("model_id", _Id), ("events", list[row]), ("model_version", _Id | None, None)],  # type: ignore[valid-type]
            frozen=True,
            gc=False,
        )
        self.batch: msgspec.json.Decoder[Any] = msgspec.json.Decoder(batch)
        self.event: msgspec.json.Decoder[Any] = msgspec.json.Decoder(event)


#: (numeric features, batch), tried in this order: the first that fits decodes it.
_FAST_DECODERS: tuple[tuple[bool, Any, Any], ...] = (
    (True, msgspec.json.Decoder(_NumericBatch), msgspec.json.Decoder(_NumericEvent)),
    (False, msgspec.json.Decoder(_FastBatch), msgspec.json.Decoder(_FastEvent)),
)


class PredictionEvent(EventRow):
    """One prediction of one model: its input features and its output."""

    model_id: Identifier
    model_version: Identifier | None = None


class LabelRow(BaseModel):
    """The true outcome of one earlier prediction (``event_id``), known at ``ts``.

    A row (of a message, or of an ``EventBatch``) with ``label`` and no ``features``.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: Identifier
    ts: EventTime
    label: LabelValue


class LabelEvent(LabelRow):
    """A label on ``<prefix>.labels`` (or the predictions topic): keyed by ``model_id``."""

    model_id: Identifier


class EventBatch(BaseModel):
    """Many rows of one model in one Kafka message (cheaper for high-volume producers)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    model_id: Identifier
    model_version: Identifier | None = None
    events: list[EventRow]


class _BatchEnvelope(BaseModel):
    """An ``EventBatch`` whose rows are validated one by one, so one bad row loses only itself."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    model_id: Identifier
    model_version: Identifier | None = None
    events: list[Any]


@dataclass(frozen=True, slots=True)
class RowError:
    """A row (or a whole message, ``index`` None) that failed validation."""

    index: int | None
    reason: str
    message: str
    raw: Any


@dataclass(slots=True)
class DecodedMessage:
    """What one Kafka message held: valid rows of one model, and the rows that were not."""

    model_id: str | None
    model_version: str | None
    rows: list[PredictionRow] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    #: Index of each valid row in the batch's ``events`` (None for a single event).
    row_indices: Sequence[int | None] = field(default_factory=list)
    labels: list[LabelRow] = field(default_factory=list)
    label_indices: list[int | None] = field(default_factory=list)
    #: Prediction (True) and label (False) rows, in the order the message holds them.
    order: list[bool] = field(default_factory=list)
    #: Only predictions, all valid, none with a label: no label to join, nothing to refuse.
    plain: bool = False
    #: Every feature value of every row is a float or None (no type to check).
    numeric: bool = False
    #: The rows are ``TypedRow``s of the ``TypedDecoder`` given (numeric too).
    typed: bool = False


def is_label(raw: Any) -> bool:
    """A label row has ``label`` and no ``features``."""
    return isinstance(raw, dict) and "label" in raw and "features" not in raw


def describe_validation_error(exc: ValidationError) -> str:
    """A short, human message naming each bad field: ``ts: ...; features.x: ...``."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "event"
        parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def decode_message(value: bytes | None, typed: TypedDecoder | None = None) -> DecodedMessage:
    """Decode one Kafka message value into rows, keeping every failure with its reason.
    ``typed``: the decoder of the model the message's key names, if it has one.

    >>> msg = decode_message(b'{"model_id": "m", "event_id": "1", "ts": 0, "features": {"x": 1}}')
    >>> (msg.model_id, len(msg.rows), msg.errors)
    ('m', 1, [])
    >>> decode_message(b'not json').errors[0].reason
    'decode'
    """
    if not value:
        return DecodedMessage(None, None, errors=[RowError(None, "decode", "empty message", None)])
    fast = None if typed is None else _decode_typed(value, typed)
    if fast is None:
        fast = _decode_fast(value)
    if fast is not None:
        return fast
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return DecodedMessage(
            None, None, errors=[RowError(None, "decode", f"not JSON: {exc}", None)]
        )
    if not isinstance(body, dict):
        msg = f"expected a JSON object, got {type(body).__name__}"
        return DecodedMessage(None, None, errors=[RowError(None, "schema", msg, body)])
    if "events" in body:
        return _decode_batch(body)
    label = is_label(body)
    try:
        event = (LabelEvent if label else PredictionEvent).model_validate(body)
    except ValidationError as exc:
        model_id = body.get("model_id") if isinstance(body.get("model_id"), str) else None
        error = RowError(
            None, "label_schema" if label else "schema", describe_validation_error(exc), body
        )
        return DecodedMessage(model_id, None, errors=[error])
    if isinstance(event, LabelEvent):
        return DecodedMessage(
            event.model_id, None, labels=[event], label_indices=[None], order=[False]
        )
    assert isinstance(event, PredictionEvent)
    return DecodedMessage(
        event.model_id, event.model_version, rows=[event], row_indices=[None], order=[True]
    )


def _decode_batch(body: dict[str, Any]) -> DecodedMessage:
    try:
        envelope = _BatchEnvelope.model_validate(body)
    except ValidationError as exc:
        error = RowError(None, "schema", describe_validation_error(exc), body)
        return DecodedMessage(None, None, errors=[error])
    row_indices: list[int | None] = []
    decoded = DecodedMessage(envelope.model_id, envelope.model_version, row_indices=row_indices)
    for index, raw in enumerate(envelope.events):
        label = is_label(raw)
        try:
            if label:
                decoded.labels.append(LabelRow.model_validate(raw))
                decoded.label_indices.append(index)
            else:
                decoded.rows.append(EventRow.model_validate(raw))
                row_indices.append(index)
            decoded.order.append(not label)
        except ValidationError as exc:
            message = f"events[{index}]: {describe_validation_error(exc)}"
            reason = "label_schema" if label else "schema"
            decoded.errors.append(RowError(index, reason, message, raw))
    return decoded


def _decode_fast(value: bytes) -> DecodedMessage | None:
    """The common case, decoded and validated by msgspec in one pass: a message of valid
    predictions with epoch-second timestamps. None for anything else (labels, an invalid
    row, RFC 3339 timestamps): ``decode_message``'s row-by-row path takes it then.
    """
    is_batch = b'"events"' in value
    for numeric, batch_decoder, event_decoder in _FAST_DECODERS:
        try:
            if is_batch:
                batch = batch_decoder.decode(value)
                model_id, model_version, rows = batch.model_id, batch.model_version, batch.events
                indices: list[int | None] = list(range(len(rows)))
            else:
                event = event_decoder.decode(value)
                if not event.model_id:
                    return None
                model_id, model_version, rows = event.model_id, event.model_version, [event]
                indices = [None]
        except (msgspec.ValidationError, msgspec.DecodeError):
            continue
        if any(row.label is not None for row in rows):
            return None
        return DecodedMessage(
            model_id,
            model_version,
            rows=list(rows),
            row_indices=indices,
            order=[True] * len(rows),
            plain=True,
            numeric=numeric,
        )
    return None


def _decode_typed(value: bytes, typed: TypedDecoder) -> DecodedMessage | None:
    """``_decode_fast`` for one model's messages, with its ``TypedDecoder``: None for a
    message it does not fit (another model's, a label, a bad row, ...)."""
    try:
        if b'"events"' in value:
            batch = typed.batch.decode(value)
            rows = batch.events
            indices: Sequence[int | None] = range(len(rows))
        else:
            batch = typed.event.decode(value)
            rows, indices = [batch], (None,)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if (
        batch.model_id != typed.model_id
        or any(row.label is not None for row in rows)
        or max(map(abs, map(_TS, rows)), default=0.0) > _MAX_EPOCH_SECONDS
    ):
        return None
    return DecodedMessage(
        batch.model_id,
        batch.model_version,
        rows=rows,
        row_indices=indices,
        order=[True] * len(rows),
        plain=True,
        numeric=True,
        typed=True,
    )


_TS = attrgetter("ts")


@lru_cache(maxsize=8)
def batch_rows(value: bytes) -> list[Any]:
    """The rows of an EventBatch message as they arrived (for dead letters of rows whose
    decoded form left something out)."""
    rows = orjson.loads(value)["events"]
    assert isinstance(rows, list)
    return rows
