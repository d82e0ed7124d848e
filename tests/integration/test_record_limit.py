"""The look for an earlier purchase when one program lists over the record limit (issue 23,
item 12): narrowed to the API user's purchases, found whatever their status, and a chunk
that still cannot look fails visibly on its last attempt instead of riding into the DLQ."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from voucher_distributor.adapters.certiverse import CertiverseRecordLimitExceeded
from voucher_distributor.domain.batches import purchase_notes, stack_tag
from voucher_distributor.models.ledger import ChunkState
from voucher_distributor.pipeline.purchase import find_chunk_purchase, purchase_chunk
from voucher_distributor_cli.sandbox import SandboxConfig

from .purchase_rig import PARTNER, SPRING, TOKEN, Rig, make_rig

SAMPLE = (
    Path(__file__).resolve().parents[2] / "cli/voucher_distributor_cli/sandbox/data/sample.json"
)
API_USER = "api@certiverse.example"
LIMIT = 4


def _seeded(tmp_path: Path, purchases: list[dict[str, object]]) -> Path:
    data = json.loads(SAMPLE.read_text(encoding="utf-8"))
    data["purchases"] = purchases
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _purchase(n: int, *, by: str, status: str = "Complete", notes: str = "", qty: int = 2):
    return {
        "amountPaid": 0, "id": f"seed-{n}", "notes": notes or f"by hand {n}",
        "partnerName": PARTNER, "programName": SPRING, "quantity": qty,
        "purchaseDateUtc": datetime(2026, 1, 1, tzinfo=UTC).isoformat(), "status": status,
        "voucherPurchaseCode": f"VP-SEED-{n}", "purchasedByEmail": by,
    }  # fmt: skip


@pytest.fixture
def crowded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    """A program whose purchases by other people (all Complete) are over the record limit, and
    an earlier purchase of our chunk, by the API user, in a status we do not know."""
    monkeypatch.setenv("CERTIVERSE_TOKEN", TOKEN)
    ours = purchase_notes("", "f-crowded", 0, stack_tag(""))
    seeded = [_purchase(n, by="someone@acme.example") for n in range(LIMIT + 2)]
    seeded.append(_purchase(99, by=API_USER, status="OnHold", notes=ours, qty=2))
    config = SandboxConfig(
        token=TOKEN, generation_delay_s=0, seed=3, record_limit=LIMIT,
        data_path=_seeded(tmp_path, seeded),
    )  # fmt: skip
    with make_rig(config, certiverse_api_user_email=API_USER) as rig:
        yield rig


def test_the_look_narrows_to_the_api_user_and_finds_an_unknown_status(crowded: Rig) -> None:
    chunk = crowded.add_batch("f-crowded", 2)
    found = find_chunk_purchase(crowded.services, chunk)
    assert found is not None
    assert found.voucher_purchase_code == "VP-SEED-99"
    assert found.status == "OnHold"


def test_without_the_api_users_email_the_last_attempt_fails_the_chunk(crowded: Rig) -> None:
    """Narrowing by status cannot get under the limit (all Complete): a retry raises (SQS tries
    again), and the last attempt fails the chunk, saying what to do, and buys nothing."""
    services = crowded.with_settings(certiverse_api_user_email="", max_purchase_attempts=2)
    crowded.add_batch("f-blind", 2)
    assert crowded.ledger.chunks.acquire_purchase_lease(
        "f-blind", 0, owner="dead", now=0, lease_seconds=1
    )  # an earlier attempt may have bought: attempt 2 must look first
    with pytest.raises(CertiverseRecordLimitExceeded):
        purchase_chunk(services, "f-blind", 0, owner="w2", receive_count=1)
    # The last delivery, once w2's lease is over.
    last = crowded.with_settings(
        clock=lambda: time.time() + 3600, certiverse_api_user_email="", max_purchase_attempts=2
    )
    assert purchase_chunk(last, "f-blind", 0, owner="w3", receive_count=2) == "failed"
    chunk = crowded.ledger.chunks.get_chunk("f-blind", 0)
    assert chunk is not None
    assert chunk.state == ChunkState.FAILED
    assert "CertiverseApiUserEmail" in (chunk.failure_reason or "")
    assert len(crowded.sandbox.purchases()) == LIMIT + 3  # nothing bought
    assert os.environ["CERTIVERSE_TOKEN"] == TOKEN
