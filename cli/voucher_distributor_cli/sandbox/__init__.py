"""A Certiverse-compatible sandbox: the Voucher Partner API on a local port, with faults.

It is the local default for the pipeline, the peer of the client's tests and a dry-run tool
(``voucher-distributor sandbox``). It shares the project's models and purchase rules, so what it
accepts is exactly what our pre-flight lets through.
"""

from voucher_distributor_cli.sandbox.catalog import Catalog, CatalogError, load_catalog
from voucher_distributor_cli.sandbox.config import FaultSettings, SandboxConfig
from voucher_distributor_cli.sandbox.server import SandboxServer
from voucher_distributor_cli.sandbox.store import RequestRecord

__all__ = [
    "Catalog",
    "CatalogError",
    "FaultSettings",
    "RequestRecord",
    "SandboxConfig",
    "SandboxServer",
    "load_catalog",
]
