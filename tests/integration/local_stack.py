"""The local runner's stack with the sandbox, over HTTP on a free loopback port, playing
Certiverse: the start the CLI-level integration tests share."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from voucher_distributor_cli.local.run import LocalPipeline
from voucher_distributor_cli.sandbox import SandboxConfig, SandboxServer


@contextlib.contextmanager
def sandboxed_pipeline(
    tmp: Path, config: SandboxConfig, partner: str, **pipeline_options: Any
) -> Iterator[tuple[SandboxServer, LocalPipeline]]:
    """A started sandbox of ``config`` and a LocalPipeline buying from it with its token for
    ``partner`` by default; the handlers log to ``tmp/handlers.log``. ``pipeline_options`` go to
    LocalPipeline as they are (tuning, parameters, email, mail_dir, ...)."""
    with (
        SandboxServer(config, host="127.0.0.1", port=0) as sandbox,
        (tmp / "handlers.log").open("w", encoding="utf-8") as log,
        LocalPipeline(
            certiverse_url=sandbox.base_url,
            certiverse_token=config.token,
            default_partner=partner,
            log_stream=log,
            **pipeline_options,
        ) as pipeline,
    ):
        yield sandbox, pipeline


def run_csv(pipeline: LocalPipeline, path: Path, text: str) -> str:
    """``text`` written to ``path``, submitted and run to its end: the batch id."""
    path.write_text(text, encoding="utf-8")
    batch_id = pipeline.submit_csv(path)
    pipeline.run_until_done(batch_id, timeout_s=120)
    return batch_id
