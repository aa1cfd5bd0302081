"""Reading reference and current data: the same data as CSV and as Parquet is the same data."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from driftline.datafiles import read_table
from driftline.monitoring import evaluate_files, profile_file
from driftline.schemas.monitors import FeatureSpec, ThresholdSpec


def _table(n: int = 2000, seed: int = 3) -> pa.Table:
    rng = np.random.default_rng(seed)

    def with_blanks(values: np.ndarray, kind: type) -> pa.Array:
        blank = rng.random(n) < 0.1
        return pa.array([None if b else kind(v) for v, b in zip(values, blank, strict=True)])

    return pa.table(
        {
            "amount": with_blanks(rng.lognormal(3, 1, n), float),
            "items": with_blanks(rng.integers(1, 9, n), int),
            # NA: Namibia, not a missing value.
            "country": with_blanks(rng.choice(["DE", "FR", "NA", "US"], n), str),
            "returning": with_blanks(rng.random(n) < 0.4, bool),
        }
    )


def _write(table: pa.Table, directory: Path) -> tuple[Path, Path]:
    pq.write_table(table, directory / "data.parquet")
    pacsv.write_csv(table, directory / "data.csv")  # a null is an empty cell
    return directory / "data.parquet", directory / "data.csv"


def test_csv_and_parquet_of_the_same_data_give_the_same_profile(tmp_path: Path) -> None:
    parquet, csv = _write(_table(), tmp_path)
    (features, from_parquet), (_, from_csv) = profile_file(parquet), profile_file(csv)
    assert [f.kind for f in features] == ["numeric", "numeric", "categorical", "boolean"]
    assert from_csv.fingerprint() == from_parquet.fingerprint()


def test_an_empty_csv_cell_is_missing_for_every_kind(tmp_path: Path) -> None:
    _, csv = _write(_table(), tmp_path)
    table = read_table(csv)
    for name in ("amount", "items", "country", "returning"):
        assert table.column(name).null_count > 0, name
    assert "" not in table.column("country").to_pylist()
    assert "NA" in table.column("country").to_pylist()


def test_a_csv_reference_has_no_drift_against_the_same_data_from_parquet(tmp_path: Path) -> None:
    """As against a stream of the same events: there a missing value is null."""
    parquet, csv = _write(_table(), tmp_path)
    result = evaluate_files(csv, parquet, None, ThresholdSpec(), min_rows=100)
    assert not result.drifted
    assert all(f.psi == pytest.approx(0.0, abs=1e-12) for f in result.features)


def test_a_csv_column_with_no_value_is_all_missing(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("x,c\n1.5,\n2.5,\n")
    features = [
        FeatureSpec(name="x", kind="numeric"),
        FeatureSpec(name="c", kind="categorical"),
    ]
    _, profile = profile_file(tmp_path / "data.csv", features)
    assert profile.features[1].histogram.missing == 2
