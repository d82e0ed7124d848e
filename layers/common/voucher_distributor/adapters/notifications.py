"""SNS: tell people (e-mail subscriptions) of a batch that waits for their approval."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import boto3


class Notifications:
    def __init__(self, topic_arn: str, *, sns: Any = None) -> None:
        self.topic_arn = topic_arn
        self._given = sns

    @cached_property
    def _sns(self) -> Any:  # made on first use: most invocations never notify
        return self._given or boto3.client("sns")

    def publish(self, subject: str, message: str) -> None:
        # SNS subjects: at most 100 characters, no line breaks.
        self._sns.publish(
            TopicArn=self.topic_arn, Subject=" ".join(subject.split())[:100], Message=message
        )
