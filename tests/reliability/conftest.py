"""The reliability suite's report, printed at the end of the run."""

from __future__ import annotations

import pytest

from tests.reliability.harness import LEDGERS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not LEDGERS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("reliability: every row accounted for")
    write(
        f"{'scenario':<24}{'seed':>5} {'db':<11}{'produced':>9}{'counted':>9}{'dead':>6}"
        f"{'late':>6}{'dup':>5}{'skipped':>8}{'triggers exp/sent':>19}{'requests':>9}"
        f"{'DLQ resent':>11}{'s':>6}"
    )
    order = {name: i for i, name in enumerate(dict.fromkeys(x.scenario for x in LEDGERS))}
    for ledger in sorted(LEDGERS, key=lambda x: (order[x.scenario], x.database, x.seed)):
        write(
            f"{ledger.scenario:<24}{ledger.seed:>5} {ledger.database:<11}{ledger.produced:>9}"
            f"{ledger.counted:>9}{sum(ledger.dead.values()):>6}{ledger.late:>6}"
            f"{ledger.duplicates:>5}{ledger.skipped:>8}"
            f"{f'{ledger.triggers_expected}/{ledger.triggers_sent}':>19}{ledger.requests:>9}"
            f"{ledger.dead_letters_resent:>11}{ledger.seconds:>6.0f}"
        )
    reasons: dict[str, int] = {}
    for ledger in LEDGERS:
        for reason, count in ledger.dead.items():
            reasons[reason] = reasons.get(reason, 0) + count
    write(
        f"{len(LEDGERS)} scenario runs; {sum(x.produced for x in LEDGERS):,} rows produced, "
        f"{sum(x.counted for x in LEDGERS):,} counted, "
        f"{sum(sum(x.dead.values()) for x in LEDGERS):,} dead-lettered "
        f"({', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))}), "
        f"{sum(x.late for x in LEDGERS):,} late, {sum(x.duplicates for x in LEDGERS)} duplicates "
        f"dropped, {sum(x.skipped for x in LEDGERS)} skipped; triggers expected "
        f"{sum(x.triggers_expected for x in LEDGERS)}, sent {sum(x.triggers_sent for x in LEDGERS)}"
    )
