"""Alertmanager's webhook notification (``version: "4"``), as driftline receives it."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class Alert(BaseModel):
    """One alert of a notification."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: AwareDatetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(None, alias="endsAt")
    generator_url: str | None = Field(None, alias="generatorURL")
    fingerprint: str = Field(min_length=1, max_length=128)

    def trigger_id(self) -> str:
        """Stable id of the trigger of this alert: the same alert notified twice, one id.

        >>> from datetime import UTC
        >>> alert = Alert(status="firing", labels={}, startsAt=datetime(2024, 1, 1, tzinfo=UTC),
        ...               fingerprint="c0ffee")
        >>> alert.trigger_id()
        'trg_am_82ffaaf5d8187b6048ce24a7'
        """
        key = f"alertmanager\n{self.fingerprint}\n{self.starts_at.isoformat()}"
        return f"trg_am_{hashlib.sha256(key.encode()).hexdigest()[:24]}"


class Notification(BaseModel):
    """The body Alertmanager POSTs to a webhook receiver."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    version: Literal["4"]
    group_key: str = Field(alias="groupKey")
    truncated_alerts: int = Field(0, alias="truncatedAlerts")
    status: Literal["firing", "resolved"]
    receiver: str
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str | None = Field(None, alias="externalURL")
    alerts: list[Alert]
