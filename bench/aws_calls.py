"""Counting AWS calls in this process: DynamoDB item writes, calls by operation, time inside.

Kept apart from the pipeline runner so a measured process (the ingest RSS child) can count its
calls without importing the local stack.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

_SINGLE_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem"})


# ---------------------------------------------------------------------- DynamoDB writes


@dataclass
class WriteCounter:
    items: int = 0
    by_operation: Counter[str] = field(default_factory=Counter)
    #: Wall seconds spent inside any AWS call (the local emulation), DynamoDB or not.
    aws_call_s: float = 0.0
    #: The same by ``service.Operation`` (e.g. ``dynamodb.BatchWriteItem``); calls overlapping
    #: on several threads (the parallel claims) add up here, but count once above.
    aws_call_s_by_operation: Counter[str] = field(default_factory=Counter)
    #: Calls by ``service.Operation``.
    calls: Counter[str] = field(default_factory=Counter)
    _in_flight: int = 0
    _since: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def enter(self) -> None:
        with self._lock:
            if self._in_flight == 0:
                self._since = time.perf_counter()
            self._in_flight += 1

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self.aws_call_s += time.perf_counter() - self._since

    def count(self, operation: str, params: dict[str, Any]) -> None:
        if operation in _SINGLE_WRITES:
            n = 1
        elif operation == "BatchWriteItem":
            n = sum(len(reqs) for reqs in params.get("RequestItems", {}).values())
        elif operation == "TransactWriteItems":
            n = sum(
                1
                for item in params.get("TransactItems", [])
                if {"Put", "Update", "Delete"} & set(item)
            )
        else:
            return
        self.items += n
        self.by_operation[operation] += n


@contextlib.contextmanager
def counting_dynamodb_writes() -> Iterator[WriteCounter]:
    """Count DynamoDB item writes of every botocore client in this process while active."""
    from botocore.client import BaseClient  # noqa: PLC0415

    counter = WriteCounter()
    original = BaseClient._make_api_call

    def counted(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        service = self.meta.service_model.service_name
        if service == "dynamodb":
            counter.count(operation_name, api_params)
        started = time.perf_counter()
        counter.enter()
        try:
            return original(self, operation_name, api_params)
        finally:
            counter.leave()
            name = f"{service}.{operation_name}"
            counter.aws_call_s_by_operation[name] += time.perf_counter() - started
            counter.calls[name] += 1

    BaseClient._make_api_call = counted
    try:
        yield counter
    finally:
        BaseClient._make_api_call = original
