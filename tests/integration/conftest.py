"""Fixtures for tests that talk HTTP to the Certiverse sandbox.

``sandbox`` is a started in-process server on a free loopback port, stopped at teardown. Its
settings come from the ``sandbox_config`` fixture, which a test module can override or a test
can parametrize directly (``@pytest.mark.parametrize("sandbox_config", [...])``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from voucher_distributor_cli.sandbox import SandboxConfig, SandboxServer

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
