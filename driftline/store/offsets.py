"""Partitions' stored offsets, written only by the worker that owns them.

A worker leaves its consumer group without being told when a batch takes longer than
the group allows (the database away for minutes, the write retried all along):
another worker is given its partitions, restores them from the store and counts on.
The first one, once its write goes through, would store its batch over the other's.
So an offset is written only where the stored one is still the one this worker last
read or wrote (or already the one it writes: its own commit whose answer was lost);
otherwise the whole transaction is refused with ``PartitionTaken``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from driftline.exceptions import PartitionTaken
from driftline.store.models import ConsumerOffsetRow

Partition = tuple[str, int]


def write_offsets(
    session: Session,
    offsets: Mapping[Partition, int],
    expected: Mapping[Partition, int | None],
    logs: Mapping[Partition, str | None],
    now: datetime,
    keep_log: bool = True,
    held: Mapping[Partition, int | None] | None = None,
) -> None:
    """Store each partition's offset where its stored one is ``expected`` (None: no row)
    or already this offset; the log given replaces the stored one (None keeps it, unless
    ``keep_log`` is false). ``held``: partitions not written whose stored offsets must
    still be these (those under which the models' snapshots are stored)."""
    row = ConsumerOffsetRow
    for (topic, partition), before in sorted((held or {}).items()):
        where = (row.topic == topic, row.partition == partition)
        if before is None:
            stored = session.scalar(select(row.offset).where(*where))
            same = stored is None
        else:  # a write of the row as it is: it stays locked until the transaction ends
            kept = session.execute(
                update(row)
                .where(*where, row.offset == before)
                .values(offset=row.offset)
                .execution_options(synchronize_session=False)
            )
            same = kept.rowcount == 1  # type: ignore[attr-defined]
            stored = before if same else session.scalar(select(row.offset).where(*where))
        if not same:
            raise PartitionTaken(_taken(topic, partition, stored, before))
    for (topic, partition), offset in sorted(offsets.items()):
        log_id = logs.get((topic, partition))
        before = expected.get((topic, partition))
        where = (row.topic == topic, row.partition == partition)
        if before is None:
            insert = (
                postgresql.insert
                if session.get_bind().dialect.name == "postgresql"
                else sqlite.insert
            )
            added = session.execute(
                insert(row)
                .values(
                    topic=topic, partition=partition, offset=offset, updated_at=now, log_id=log_id
                )
                .on_conflict_do_nothing(index_elements=["topic", "partition"])
            )
            if added.rowcount == 1:  # type: ignore[attr-defined]
                continue
            stored = session.scalar(select(row.offset).where(*where))
            if stored == offset:
                continue
            raise PartitionTaken(_taken(topic, partition, stored, before))
        values: dict[str, object] = {"offset": offset, "updated_at": now}
        if log_id is not None or not keep_log:
            values["log_id"] = log_id
        changed = session.execute(
            update(row)
            .where(*where, row.offset.in_([before, offset]))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if changed.rowcount != 1:  # type: ignore[attr-defined]
            stored = session.scalar(select(row.offset).where(*where))
            raise PartitionTaken(_taken(topic, partition, stored, before))


def _taken(topic: str, partition: int, stored: int | None, expected: int | None) -> str:
    return (
        f"topic {topic}[{partition}]: another worker stored its offsets ({stored}, where this "
        f"one had {expected}): the partition is that worker's now"
    )
