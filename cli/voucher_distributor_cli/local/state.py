"""``local run --state DIR``: the local stack kept between runs.

Each ``local run`` creates its stack afresh in moto, which keeps nothing once the process ends.
With ``--state DIR`` the run loads DIR at its start and writes it at its end, so running the
same file twice hands out the codes of the first run (rows ``existing``), as the deployed stack
would. DIR holds, as files a person can read:

* ``ledger.json``: every item of the ledger table (DynamoDB's typed JSON, as ``scan`` gives it):
  batches, chunks, assignments, holdings — what makes a person's second row ``existing``;
* ``s3/index.json`` and ``s3/objects/``: the inbox bucket's objects (results, summaries, work
  files), except ``incoming/``, whose uploads would start their batches again;
* ``certiverse.json``: the built-in sandbox's catalogue with every purchase and voucher it has
  sold, in the sandbox's own data-file format (``sandbox --data`` loads it too): the codes held.

The stack itself (queues, functions, secrets) is created from the template each time.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from voucher_distributor_cli.local.runner import MotoStack
from voucher_distributor_cli.sandbox import SandboxServer
from voucher_distributor_cli.sandbox.catalog import PURCHASED_BY_EMAIL_KEY
from voucher_distributor_cli.sandbox.store import wire

LEDGER_FILE = "ledger.json"
CERTIVERSE_FILE = "certiverse.json"
S3_DIR = "s3"
#: Uploads under this prefix start a batch: never put back.
_NOT_RESTORED = ("incoming/",)
_BATCH_WRITE = 25


class StateError(RuntimeError):
    """The state directory cannot be read or written (the message says which file)."""


def sandbox_data(state: Path) -> Path | None:
    """The sandbox catalogue of an earlier run, when DIR has one."""
    path = state / CERTIVERSE_FILE
    return path if path.is_file() else None


def restore(state: Path, stack: MotoStack) -> dict[str, int]:
    """Put an earlier run's ledger items and bucket objects into a new stack; what was put."""
    restored = {"ledgerItems": 0, "objects": 0}
    ledger = state / LEDGER_FILE
    if ledger.is_file():
        items = _read_json(ledger).get("items", [])
        dynamodb = stack.client("dynamodb")
        table = stack.resource("LedgerTable").ref
        for start in range(0, len(items), _BATCH_WRITE):
            requests = [{"PutRequest": {"Item": i}} for i in items[start : start + _BATCH_WRITE]]
            pending: dict[str, Any] = {table: requests}
            while pending:
                pending = dynamodb.batch_write_item(RequestItems=pending).get(
                    "UnprocessedItems", {}
                )
        restored["ledgerItems"] = len(items)
    index = state / S3_DIR / "index.json"
    if index.is_file():
        s3 = stack.client("s3")
        bucket = stack.resource("InboxBucket").ref
        for key, entry in _read_json(index).get("objects", {}).items():
            body = (state / S3_DIR / "objects" / entry["file"]).read_bytes()
            s3.put_object(
                Bucket=bucket,
                Key=key,
                Body=body,
                ContentType=entry.get("contentType") or "binary/octet-stream",
                Metadata=entry.get("metadata") or {},
            )
            restored["objects"] += 1
    return restored


def save(state: Path, stack: MotoStack, sandbox: SandboxServer | None) -> None:
    """Write the stack's ledger and bucket, and the sandbox's sales, to ``state``."""
    state.mkdir(parents=True, exist_ok=True)
    dynamodb = stack.client("dynamodb")
    items: list[dict[str, Any]] = []
    for page in dynamodb.get_paginator("scan").paginate(
        TableName=stack.resource("LedgerTable").ref
    ):
        items.extend(page.get("Items", []))
    _write_json(state / LEDGER_FILE, {"items": items})
    _save_objects(state / S3_DIR, stack)
    if sandbox is not None:
        _write_json(state / CERTIVERSE_FILE, _sandbox_catalogue(sandbox))


def _save_objects(where: Path, stack: MotoStack) -> None:
    s3 = stack.client("s3")
    bucket = stack.resource("InboxBucket").ref
    objects_dir = where / "objects"
    objects_dir.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for listed in page.get("Contents", []):
            key = str(listed["Key"])
            if key.startswith(_NOT_RESTORED):
                continue
            got = s3.get_object(Bucket=bucket, Key=key)
            name = hashlib.sha256(key.encode()).hexdigest()
            (objects_dir / name).write_bytes(got["Body"].read())
            index[key] = {
                "file": name,
                "contentType": got.get("ContentType"),
                "metadata": got.get("Metadata") or {},
            }
    _write_json(where / "index.json", {"objects": index})


def _sandbox_catalogue(sandbox: SandboxServer) -> dict[str, Any]:
    """The sandbox's catalogue plus what it sold, as a data file it starts from next time."""
    catalog = sandbox.catalog
    buyer = sandbox.config.api_user_email
    return {
        "_comment": "written by `voucher-distributor local run --state`: the sandbox's sales",
        "partners": [wire(p) for p in catalog.partners],
        "programs": [wire(p) for p in catalog.programs],
        "purchases": [
            {**wire(p), PURCHASED_BY_EMAIL_KEY: catalog.purchased_by.get(p.id, buyer)}
            for p in sandbox.purchases()
        ],
        "vouchers": [wire(v) for v in sandbox.vouchers()],
    }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StateError(f"{path}: cannot be read as the local state ({exc})") from exc
    if not isinstance(document, dict):
        raise StateError(f"{path}: not a local state file")
    return document


def _write_json(path: Path, document: dict[str, Any]) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    temporary.replace(path)
