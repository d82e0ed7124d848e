"""Fixtures for tests that talk HTTP to the Certiverse sandbox, and to the ledger in moto.

``sandbox`` is a started in-process server on a free loopback port, stopped at teardown. Its
settings come from the ``sandbox_config`` fixture, which a test module can override or a test
can parametrize directly (``@pytest.mark.parametrize("sandbox_config", [...])``).

``ledger`` is the template's table in moto, twice: as moto has it, and with the local runner's
fixes applied (what every local run uses), so a conditional write or transaction is checked on
both.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from voucher_distributor.adapters.ledger import Ledger
from voucher_distributor_cli.local.runner import MotoStack, moto_fixes
from voucher_distributor_cli.sandbox import SandboxConfig, SandboxServer

from .moto_stack import TEMPLATE, stack_ledger


@pytest.fixture(params=["moto", "moto-with-runner-fixes"])
def ledger(request: pytest.FixtureRequest) -> Iterator[Ledger]:
    if request.param == "moto-with-runner-fixes":
        moto_fixes.apply()  # what the local runner runs on (once per process)
    with MotoStack(TEMPLATE) as stack:
        yield stack_ledger(stack, claim_workers=8)


SANDBOX_TOKEN = "sandbox-token"


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    """Small pages and a short generation delay: pagination and polling show up fast."""
    return SandboxConfig(
        token=SANDBOX_TOKEN,
        page_size=2,
        generation_delay_s=0.2,
        next_link_style="absolute",
        seed=1234,
    )


@pytest.fixture
def sandbox(sandbox_config: SandboxConfig) -> Iterator[SandboxServer]:
    server = SandboxServer(sandbox_config, host="127.0.0.1", port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()
