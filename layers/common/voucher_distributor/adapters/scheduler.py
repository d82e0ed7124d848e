"""EventBridge Scheduler: one one-time schedule per batch with a ``sendAt``.

The schedule (``at(...)`` in UTC, ``ActionAfterCompletion: DELETE``) puts one message on the
e-mail queue when the send is due, with the role the stack made for it (``sqs:SendMessage`` on
that queue only). Schedules are not part of any function or of the stack's resources, so a
deploy (a function update) leaves a pending one as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import ClientError

from voucher_distributor.domain.send_schedule import at_expression, parse_at_expression

GROUP = "default"


class SchedulerError(RuntimeError):
    """EventBridge Scheduler refused the call (the message says what it said)."""


@dataclass(frozen=True)
class OneTimeSchedule:
    name: str
    at: int | None
    target_arn: str
    body: dict[str, Any]


class Scheduler:
    def __init__(self, *, client: Any = None) -> None:
        self._client = client or boto3.client("scheduler")

    def create_one_time(
        self, name: str, *, at: int, target_arn: str, role_arn: str, body: dict[str, Any]
    ) -> bool:
        """Create the schedule; False when one of that name exists already (a repeat)."""
        try:
            self._client.create_schedule(
                Name=name,
                GroupName=GROUP,
                ScheduleExpression=at_expression(at),
                ScheduleExpressionTimezone="UTC",
                FlexibleTimeWindow={"Mode": "OFF"},
                ActionAfterCompletion="DELETE",
                State="ENABLED",
                Description="voucher-distributor: a batch's scheduled e-mails",
                Target={
                    "Arn": target_arn,
                    "RoleArn": role_arn,
                    "Input": json.dumps(body, separators=(",", ":")),
                    "RetryPolicy": {
                        "MaximumEventAgeInSeconds": 86_400,
                        "MaximumRetryAttempts": 185,
                    },
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConflictException":
                return False
            raise SchedulerError(f"EventBridge Scheduler refused schedule {name}: {exc}") from exc
        return True

    def delete(self, name: str) -> bool:
        """Delete the schedule; False when it is gone already (fired, or deleted)."""
        try:
            self._client.delete_schedule(Name=name, GroupName=GROUP)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return False
            raise SchedulerError(f"EventBridge Scheduler refused deleting {name}: {exc}") from exc
        return True

    def get(self, name: str) -> OneTimeSchedule | None:
        try:
            got = self._client.get_schedule(Name=name, GroupName=GROUP)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise
        target = got.get("Target") or {}
        return OneTimeSchedule(
            name=name,
            at=parse_at_expression(str(got.get("ScheduleExpression", ""))),
            target_arn=str(target.get("Arn", "")),
            body=json.loads(target.get("Input") or "{}"),
        )

    def names(self, prefix: str) -> list[str]:
        """The default group's schedules whose names start with ``prefix``."""
        found: list[str] = []
        token: str | None = None
        while True:
            got = self._client.list_schedules(
                GroupName=GROUP, NamePrefix=prefix, **({"NextToken": token} if token else {})
            )
            found += [str(s["Name"]) for s in got.get("Schedules", [])]
            token = got.get("NextToken")
            if not token:
                return found
