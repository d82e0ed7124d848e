"""Which purchase each accepted row goes into: target resolution, duplicates, chunk planning.

Certiverse sells at most 1000 vouchers per purchase, and a purchase is for one partner and one
program, so accepted rows are grouped by (partner, program) and cut into chunks of at most
``MAX_CHUNK``. Everything here streams: memory grows with the number of distinct e-mails (a few
bytes each) and with one open chunk per target, never with the rows themselves.
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from itertools import chain
from typing import Final

from voucher_distributor.domain.emails import normalise_email
from voucher_distributor.domain.recipients import InputRow

#: The largest purchase the Certiverse API accepts.
MAX_CHUNK: Final = 1000


@dataclass(frozen=True, slots=True)
class Target:
    """A (partner, program) pair: what one purchase buys for."""

    partner_name: str
    program_name: str


def resolve_target(
    row: InputRow,
    *,
    metadata_partner: str | None,
    metadata_program: str | None,
    default_partner: str | None,
    default_program: str | None,
) -> Target | None:
    """The row's target: each name from the row, else the object metadata, else the stack default.

    Partner and program are resolved independently (a file may name only its program per row).
    None when either stays blank; the row is then rejected with ``missing_target_reason``.
    """
    partner = _first_given(row.partner_name, metadata_partner, default_partner)
    program = _first_given(row.program_name, metadata_program, default_program)
    if partner is None or program is None:
        return None
    return Target(partner, program)


def spelling_note(given: Target, matched: Target) -> str:
    """What an assigned row is told when Certiverse's names differ from the ones given (names
    are matched ignoring case): the names bought for, so a near-miss partner is seen."""
    said = [
        f"{kind} {theirs!r} was given as {ours!r}"
        for kind, ours, theirs in (
            ("partner", given.partner_name, matched.partner_name),
            ("program", given.program_name, matched.program_name),
        )
        if ours != theirs
    ]
    if not said:
        return ""
    return f"bought for {' and '.join(said)} (names are matched ignoring case)"


def missing_target_reason(
    row: InputRow,
    *,
    metadata_partner: str | None,
    metadata_program: str | None,
    default_partner: str | None,
    default_program: str | None,
) -> str:
    """Why ``resolve_target`` found no target for the row: which name is missing, and where
    it may come from."""
    partner = _first_given(row.partner_name, metadata_partner, default_partner)
    program = _first_given(row.program_name, metadata_program, default_program)
    missing = " or ".join(
        kind for kind, name in (("partner", partner), ("program", program)) if name is None
    )
    columns = " and ".join(
        f"a {kind}_name column"
        for kind, name in (("partner", partner), ("program", program))
        if name is None
    )
    return (
        f"no {missing}: give {columns}, the object's metadata ({missing.replace(' or ', ', ')}), "
        "or the stack's defaults"
    )


def _first_given(*candidates: str | None) -> str | None:
    for candidate in candidates:
        if candidate is not None and candidate.strip():
            return candidate.strip()
    return None


class DuplicateTracker:
    """Remembers (program, e-mail) pairs so a repeat within a batch can be rejected.

    Program names compare case-insensitively and e-mails in normalised form. Each pair is kept as
    an 8-byte BLAKE2b digest, not as strings, in 256 shards; a shard is a sorted ``array('Q')``
    (binary search) plus a small set of recent digests that is merged into it once it holds 128.
    Memory is therefore ~8 bytes per pair plus up to ~3 MiB of shard buffers; it never doubles
    at once (a merge rebuilds one shard of 1/256 of the pairs), which keeps a 1,000,000-row
    ingest within 1.2x the memory of a 10,000-row one. Two different pairs share a digest with
    probability ~n²/2⁶⁵ (3·10⁻⁸ for a million), which would reject one recipient as a duplicate;
    that is the accepted price of the compactness.
    """

    _SHARD_BITS: Final = 8
    _MERGE_AT: Final = 128

    def __init__(self) -> None:
        shards = 1 << self._SHARD_BITS
        self._sorted = [array("Q") for _ in range(shards)]
        self._recent: list[set[int]] = [set() for _ in range(shards)]
        self._mask = shards - 1
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def seen(self, program_name: str, email: str) -> bool:
        """True if this e-mail was already seen for this program; either way it is now seen."""
        key = _digest(program_name, email)
        shard = key & self._mask
        recent = self._recent[shard]
        if key in recent:
            return True
        merged = self._sorted[shard]
        index = bisect_left(merged, key)
        if index < len(merged) and merged[index] == key:
            return True
        recent.add(key)
        self._count += 1
        if len(recent) >= self._MERGE_AT:
            self._sorted[shard] = array("Q", sorted(chain(merged, recent)))
            recent.clear()
        return False


def _digest(program_name: str, email: str) -> int:
    """A non-zero 64-bit fingerprint of the pair (zero marks an empty slot)."""
    text = f"{program_name.strip().casefold()}\n{normalise_email(email)}"
    key = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return key or 1


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    """One future purchase: its target, its number within the target, and its rows in order."""

    target: Target
    index: int  # 0-based within the target
    row_numbers: tuple[int, ...]


class ChunkPlanner:
    """Groups accepted rows by target into chunks of at most ``max_chunk``, as they stream by.

    A chunk is handed out the moment it is full; ``finish`` hands out the partial tails in the
    order their targets first appeared. The same rows in the same order always give the same
    chunks, so a replayed ingest plans exactly what the first one planned.
    """

    def __init__(self, max_chunk: int = MAX_CHUNK) -> None:
        if not 1 <= max_chunk <= MAX_CHUNK:
            raise ValueError(f"max_chunk must be between 1 and {MAX_CHUNK}")
        self._max_chunk = max_chunk
        self._open: dict[Target, list[int]] = {}
        self._next_index: dict[Target, int] = {}
        self._finished = False

    def add(self, target: Target, row_number: int) -> ChunkPlan | None:
        """Plan a row; returns the chunk it completed, if it completed one."""
        if self._finished:
            raise RuntimeError("the planner has finished; start a new one")
        rows = self._open.setdefault(target, [])
        rows.append(row_number)
        if len(rows) < self._max_chunk:
            return None
        self._open[target] = []
        return self._plan(target, rows)

    def finish(self) -> list[ChunkPlan]:
        """The partial chunks still open, in first-seen target order; the planner is then done."""
        self._finished = True
        tails = [self._plan(target, rows) for target, rows in self._open.items() if rows]
        self._open.clear()
        return tails

    def _plan(self, target: Target, rows: list[int]) -> ChunkPlan:
        index = self._next_index.get(target, 0)
        self._next_index[target] = index + 1
        return ChunkPlan(target, index, tuple(rows))
