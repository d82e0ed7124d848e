"""EventBridge: announce a batch's completion or failure to whoever listens."""

from __future__ import annotations

import json
from typing import Any

import boto3

EVENT_SOURCE = "voucher-distributor"


class EventPublishError(RuntimeError):
    """EventBridge refused the event; the report is retried."""


class Events:
    def __init__(self, bus_name: str = "default", *, events: Any = None) -> None:
        self.bus_name = bus_name
        self._events = events or boto3.client("events")

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        got = self._events.put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail, default=str),
                    "EventBusName": self.bus_name,
                }
            ]
        )
        if got.get("FailedEntryCount"):
            raise EventPublishError(f"EventBridge refused {detail_type}: {got['Entries']}")
