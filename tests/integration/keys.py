"""API keys for integration tests, made the way an operator makes them: the CLI."""

from __future__ import annotations

from click.testing import CliRunner

from driftline.cli import cli


def create_key(database_url: str, tenant: str = "default", scope: str = "read") -> str:
    """``driftline keys create``'s key (stdout) for the store at ``database_url``, after
    ``driftline db upgrade`` (the CLI refuses a database that does not exist yet)."""
    runner = CliRunner(env={"DRIFTLINE_DATABASE_URL": database_url})
    upgraded = runner.invoke(cli, ["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    result = runner.invoke(
        cli, ["keys", "create", "--tenant", tenant, "--scope", scope, "--name", "test"]
    )
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
