"""Reading reference and current data files (Parquet or CSV) into detector columns."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from driftline.detectors.histogram import Column
from driftline.exceptions import ReferenceDataError
from driftline.schemas.monitors import FeatureSpec
from driftline.schemas.values import category_label

PARQUET_SUFFIXES = (".parquet", ".pq")
#: A reference column of this name is the model's output when features are inferred.
PREDICTION_COLUMN = "prediction"
CSV_SUFFIXES = (".csv", ".csv.gz")
#: The type a column with no value at all (every CSV cell empty) is read as, by kind.
_EMPTY_COLUMN_TYPES = {"numeric": pa.float64(), "boolean": pa.bool_(), "categorical": pa.string()}


def read_table(path: Path) -> pa.Table:
    """A Parquet or CSV file as an Arrow table (chosen by the file's suffix)."""
    name = path.name.lower()
    try:
        if name.endswith(PARQUET_SUFFIXES):
            return pq.read_table(path)
        if name.endswith(CSV_SUFFIXES):
            return _blank_is_missing(pacsv.read_csv(path))
    except FileNotFoundError:
        raise ReferenceDataError(f"data file {path} not found") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise ReferenceDataError(f"cannot read {path}: {exc}") from None
    raise ReferenceDataError(f"{path}: unknown file type; use a .parquet/.pq or .csv/.csv.gz file")


def _blank_is_missing(table: pa.Table) -> pa.Table:
    """A CSV table whose empty cells are missing (null) whatever the column's kind, as
    in Parquet. pyarrow reads an empty cell as null in numeric and boolean columns but
    as ``""`` in text ones, which made a blank a category of its own (and the same data
    read from CSV drift against its Parquet twin). Text that pyarrow would take for null
    in numbers (``NA``, ``null``) stays text: ``NA`` is a country code.
    """
    for index, field in enumerate(table.schema):
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            column = table.column(index)
            blank = pc.equal(column, "")
            if pc.any(blank).as_py():
                missing = pa.scalar(None, field.type)
                table = table.set_column(index, field, pc.if_else(blank, missing, column))
    return table


def _is_numeric(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    )


def _is_categorical(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind)
    )


def infer_features(table: pa.Table, names: Sequence[str] | None = None) -> list[FeatureSpec]:
    """Feature specs from column types: numbers numeric, strings categorical, booleans boolean.

    With ``names``, exactly those columns (an unsupported type is an error); without,
    every column of a supported type (timestamps and nested types are left out). A
    column named ``prediction`` is the model's output (``source: prediction``).
    """
    chosen = list(names) if names else table.column_names
    missing = [n for n in chosen if n not in table.column_names]
    if missing:
        raise ReferenceDataError(f"no column(s) {missing}; columns are {table.column_names}")
    specs = []
    for name in chosen:
        kind = table.schema.field(name).type
        source = "prediction" if name == PREDICTION_COLUMN else "features"
        if _is_numeric(kind):
            specs.append(FeatureSpec(name=name, kind="numeric", source=source))
        elif pa.types.is_boolean(kind):
            specs.append(FeatureSpec(name=name, kind="boolean", source=source))
        elif _is_categorical(kind):
            specs.append(FeatureSpec(name=name, kind="categorical", source=source))
        elif names:
            raise ReferenceDataError(f"column {name!r} has type {kind}; not a usable feature")
    return specs


def table_columns(table: pa.Table, features: Sequence[FeatureSpec]) -> dict[str, Column]:
    """The named columns as detector columns (float64 with NaN, or strings with None)."""
    columns: dict[str, Column] = {}
    for feature in features:
        if feature.name not in table.column_names:
            raise ReferenceDataError(
                f"no column {feature.name!r}; columns are {table.column_names}"
            )
        column = table.column(feature.name)
        if pa.types.is_null(column.type):  # every cell empty (a CSV column)
            column = column.cast(_EMPTY_COLUMN_TYPES[feature.kind])
        if feature.kind == "numeric":
            if not _is_numeric(column.type):
                raise ReferenceDataError(
                    f"column {feature.name!r} is numeric in the config but holds {column.type}"
                )
            values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
            columns[feature.name] = np.asarray(values, dtype=np.float64)
        else:
            if feature.kind == "boolean" and not pa.types.is_boolean(column.type):
                raise ReferenceDataError(
                    f"column {feature.name!r} is boolean in the config but holds {column.type}"
                )
            labels = [category_label(v) for v in column.to_pylist()]
            columns[feature.name] = np.array(labels, dtype=object)
    return columns
