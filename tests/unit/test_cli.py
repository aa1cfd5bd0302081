"""``driftline evaluate`` and the command line's errors."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from driftline.cli import cli, main


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """20 numeric features; the first three shifted by half a sigma in the current data."""
    rng = np.random.default_rng(11)
    directory = tmp_path_factory.mktemp("data")
    reference = {f"f{i:02d}": rng.normal(size=10_000) for i in range(20)}
    current = {f"f{i:02d}": rng.normal(0.5 if i < 3 else 0.0, 1.0, 1000) for i in range(20)}
    paths = {
        "ref.parquet": directory / "ref.parquet",
        "cur.parquet": directory / "cur.parquet",
        "ref.csv": directory / "ref.csv",
        "cur.csv": directory / "cur.csv",
    }
    pq.write_table(pa.table(reference), paths["ref.parquet"])
    pq.write_table(pa.table(current), paths["cur.parquet"])
    pacsv.write_csv(pa.table(reference), paths["ref.csv"])
    pacsv.write_csv(pa.table(current), paths["cur.csv"])
    return paths


@pytest.mark.parametrize(
    ("ref", "cur"),
    [("ref.parquet", "cur.parquet"), ("ref.csv", "cur.csv"), ("ref.parquet", "cur.csv")],
)
def test_evaluate_json(files: dict[str, Path], ref: str, cur: str) -> None:
    result = CliRunner().invoke(
        cli, ["evaluate", "--reference", str(files[ref]), "--current", str(files[cur]), "--json"]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["drifted"] is True
    assert len(body["features"]) == 20
    for feature in body["features"]:
        assert {"name", "psi", "js", "threshold", "drifted", "p_value"} <= feature.keys()
        # Calibrated for 1,000 rows against 10,000: far below the folklore 0.1-0.25.
        assert 0.01 < feature["threshold"] < 0.06
    assert [f["name"] for f in body["features"] if f["drifted"]] == ["f00", "f01", "f02"]
    # Attribution: the drifted features ranked by how far past their threshold.
    ratio = {f["name"]: f["psi"] / f["threshold"] for f in body["features"]}
    assert sorted(body["drifted_features"]) == ["f00", "f01", "f02"]
    assert body["drifted_features"] == sorted(body["drifted_features"], key=lambda n: -ratio[n])


def test_evaluate_matches_between_csv_and_parquet(files: dict[str, Path]) -> None:
    runs = [
        json.loads(
            CliRunner()
            .invoke(
                cli,
                [
                    "evaluate",
                    "--reference",
                    str(files[f"ref.{kind}"]),
                    "--current",
                    str(files[f"cur.{kind}"]),
                    "--json",
                ],
            )
            .output
        )
        for kind in ("csv", "parquet")
    ]
    for a, b in zip(runs[0]["features"], runs[1]["features"], strict=True):
        assert a["psi"] == pytest.approx(b["psi"], abs=1e-12)


def test_evaluate_text_features_and_metric(files: dict[str, Path]) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--reference",
            str(files["ref.csv"]),
            "--current",
            str(files["cur.csv"]),
            "--features",
            "f00,f05",
            "--features",
            "f06",
            "--metric",
            "js",
            "--threshold",
            "0.02",
        ],
    )
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines[4:7]] == ["f00", "f05", "f06"]
    assert lines[4].endswith("YES")
    assert lines[5].endswith("no")
    assert "DRIFT: 1 of 3 features drifted (f00)" in result.output


def test_fixed_threshold(files: dict[str, Path]) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--reference",
            str(files["ref.csv"]),
            "--current",
            str(files["cur.csv"]),
            "--threshold",
            "0.2",
            "--json",
        ],
    )
    body = json.loads(result.output)
    assert {f["threshold"] for f in body["features"]} == {0.2}
    assert all(f["p_value"] is None for f in body["features"])


def test_no_drift_exits_zero(files: dict[str, Path]) -> None:
    result = CliRunner().invoke(
        cli, ["evaluate", "--reference", str(files["ref.csv"]), "--current", str(files["ref.csv"])]
    )
    assert result.exit_code == 0
    assert "no drift: 0 of 20 features drifted" in result.output


def test_errors_are_one_clear_line(
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cases = [
        (["--reference", str(tmp_path / "absent.csv")], "data file"),
        (["--reference", str(files["ref.csv"]), "--features", "nope"], "no column(s) ['nope']"),
    ]
    for args, message in cases:
        argv = ["driftline", "evaluate", "--current", str(files["cur.csv"]), *args]
        monkeypatch.setattr("sys.argv", argv)
        with pytest.raises(SystemExit) as exited:
            main()
        assert exited.value.code == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["worker"],
        ["evaluate"],
        ["replay"],
        ["demo"],
        ["db"],
        ["db", "upgrade"],
        ["db", "current"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output


READ_STORE_COMMANDS = [
    ["status"],
    ["monitors", "list"],
    ["keys", "create", "--tenant", "team-a"],
    ["keys", "list"],
    ["db", "current"],
]


@pytest.mark.parametrize("command", READ_STORE_COMMANDS, ids=" ".join)
def test_store_commands_refuse_a_database_that_does_not_exist(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    """In a directory without the worker's database: an error naming the URL (rc 2),
    not a new empty driftline.db and a key no worker knows."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DRIFTLINE_DATABASE_URL", raising=False)
    monkeypatch.setattr("sys.argv", ["driftline", *command])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "no driftline database at sqlite:///driftline.db" in error
    assert str(tmp_path / "driftline.db") in error
    assert list(tmp_path.iterdir()) == []


@pytest.mark.postgres
def test_store_commands_refuse_a_postgresql_database_without_driftline(
    postgres_database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sqlalchemy.engine import make_url

    from driftline.store.migrate import current_revision
    from driftline.store.repository import create_store_engine

    missing = make_url(postgres_database).set(database="driftline_no_such_database")
    for url, expected in [
        (postgres_database, "has no driftline schema"),
        (missing.render_as_string(hide_password=False), "cannot open the database"),
    ]:
        monkeypatch.setenv("DRIFTLINE_DATABASE_URL", url)
        monkeypatch.setattr("sys.argv", ["driftline", "status"])
        with pytest.raises(SystemExit) as exited:
            main()
        assert exited.value.code == 2
        error = capsys.readouterr().err
        assert expected in error
        assert make_url(url).database in error
    engine = create_store_engine(postgres_database)
    assert current_revision(engine) is None  # nothing was created there
    engine.dispose()


def test_db_upgrade_creates_the_database_the_other_commands_then_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DRIFTLINE_DATABASE_URL", raising=False)
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    listed = runner.invoke(cli, ["keys", "list"])
    assert listed.exit_code == 0, listed.output
