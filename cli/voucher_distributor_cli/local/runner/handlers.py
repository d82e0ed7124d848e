"""The Lambda runtime's side of the local runner: the context object a handler is given, and a
function's code imported in-process (its private top-level modules kept apart per function)."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

Handler = Callable[[Any, Any], Any]


class LambdaContext:
    """The attributes and method of the Lambda runtime's context object that handlers use."""

    def __init__(
        self,
        *,
        function_name: str,
        invoked_function_arn: str,
        memory_limit_in_mb: int,
        timeout_s: int,
        log_stream_name: str,
    ) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = invoked_function_arn
        self.memory_limit_in_mb = memory_limit_in_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = log_stream_name
        self.identity: Any = None
        self.client_context: Any = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before Lambda would stop this invocation."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class _LoadedFunction:
    handler: Handler
    module: ModuleType
    private_modules: dict[str, ModuleType]
    log_stream_name: str


def _top_level_names(code_dir: Path) -> set[str]:
    """Importable top-level names a function directory provides (modules and packages)."""
    names = {path.stem for path in code_dir.glob("*.py")}
    names |= {path.parent.name for path in code_dir.glob("*/__init__.py")}
    return names


def _pop_modules(names: set[str]) -> dict[str, ModuleType]:
    """Remove and return ``names`` and their submodules from sys.modules."""
    popped: dict[str, ModuleType] = {}
    for key in list(sys.modules):
        if key.partition(".")[0] in names:
            popped[key] = sys.modules.pop(key)
    return popped
