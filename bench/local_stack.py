"""The local stack a bench run measures: the sandbox on loopback, and the pipeline against it."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from bench.workload import NO_LIMITS, PARTNER
from voucher_distributor_cli.local.run import LocalPipeline
from voucher_distributor_cli.sandbox import SandboxConfig, SandboxServer

TOKEN = "bench-token"  # noqa: S105 - the local sandbox's throwaway token


def sandbox_server(*, generation_delay_s: float, page_size: int) -> SandboxServer:
    """A Certiverse sandbox on a free loopback port (seeded: the same catalogue every run)."""
    config = SandboxConfig(
        token=TOKEN, generation_delay_s=generation_delay_s, page_size=page_size, seed=7
    )
    return SandboxServer(config, host="127.0.0.1", port=0)


def start(
    stack: contextlib.ExitStack,
    workdir: Path,
    *,
    generation_delay_s: float,
    page_size: int,
    parameters: dict[str, str] | None = None,
    **pipeline_options: Any,
) -> tuple[SandboxServer, LocalPipeline]:
    """A sandbox and the local pipeline on it, closed with ``stack``; the handlers' logs go to
    ``workdir/handlers.log``. No approval limits: the bench measures the pipeline, not its
    guards. ``parameters`` (over those) and ``pipeline_options`` go to :class:`LocalPipeline`."""
    log_stream = stack.enter_context((workdir / "handlers.log").open("w", encoding="utf-8"))
    sandbox = stack.enter_context(
        sandbox_server(generation_delay_s=generation_delay_s, page_size=page_size)
    )
    pipeline = stack.enter_context(
        LocalPipeline(
            certiverse_url=sandbox.base_url,
            certiverse_token=TOKEN,
            default_partner=PARTNER,
            log_stream=log_stream,
            parameters={**NO_LIMITS, **(parameters or {})},
            **pipeline_options,
        )
    )
    return sandbox, pipeline
