"""What a batch's ended chunks add up to, and how their outcome files merge back into row order.

When a chunk ends, its worker writes the chunk's outcomes (one record per recipient, in row
order) to a file named after the final state, then marks the chunk ended. The report reads those
files instead of querying every assignment back from DynamoDB: one GET per chunk instead of a
Query page per ~4,000 recipients, and the table's assignment items stay write-only for the
pipeline (they serve look-ups by batch and by e-mail).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from voucher_distributor.models.ledger import (
    FINAL_CHUNK_STATES,
    AssignmentRecord,
    ChunkRecord,
    ChunkState,
)


def outcomes_file(chunk_no: int, state: ChunkState) -> str:
    """The chunk's outcome file under the batch's work prefix.

    Named after the final state, so a worker that lost the race to end the chunk (it saw the
    deadline pass while another assigned the codes) never overwrites the outcomes the ledger
    kept: the report reads the file of the state the chunk record holds.
    """
    return f"outcomes/{chunk_no:05d}.{state.value.lower()}.jsonl"


@dataclass(frozen=True)
class BatchTally:
    chunks_finished: int = 0
    assigned: int = 0
    failed: int = 0
    purchases_created: int = 0
    purchases_adopted: int = 0


def tally_chunks(chunks: Iterable[ChunkRecord]) -> BatchTally:
    """The batch's counts, from its chunk records (each ended chunk counted once by design)."""
    finished = assigned = failed = created = adopted = 0
    for chunk in chunks:
        if chunk.purchase_code:
            adopted += chunk.adopted
            created += not chunk.adopted
        if chunk.state in FINAL_CHUNK_STATES:
            finished += 1
            assigned += chunk.assigned_count
            failed += chunk.failed_count
    return BatchTally(finished, assigned, failed, created, adopted)


class ChunkNotEnded(RuntimeError):
    """The report ran before every chunk had ended; SQS delivers the report message again."""


def merge_outcomes(
    chunks: Sequence[ChunkRecord],
    load: Callable[[ChunkRecord], list[AssignmentRecord]],
    *,
    ended: bool = True,
) -> Iterator[AssignmentRecord]:
    """Every chunk's outcomes as one stream in row order, loading a chunk only when needed.

    A chunk's rows are ascending, and chunks of one target never overlap, so at any row at most
    one chunk per target is open: memory is bounded by targets x 1,000 records, not batch size.
    Chunks without ``first_row`` are loaded up front (still correct, just less frugal).
    """
    for chunk in chunks if ended else ():  # a dry run's chunks never leave PENDING
        if chunk.state not in FINAL_CHUNK_STATES:
            raise ChunkNotEnded(f"chunk {chunk.batch_id}/{chunk.chunk_no:05d} is {chunk.state}")
    waiting = sorted(chunks, key=lambda c: (c.first_row or 0, c.chunk_no))
    heap: list[tuple[int, int, AssignmentRecord, Iterator[AssignmentRecord]]] = []
    next_waiting = 0
    while True:
        while next_waiting < len(waiting) and (
            not heap or (waiting[next_waiting].first_row or 0) <= heap[0][0]
        ):
            chunk = waiting[next_waiting]
            next_waiting += 1
            records = iter(load(chunk))
            first = next(records, None)
            if first is not None:
                heapq.heappush(heap, (first.row_number, chunk.chunk_no, first, records))
        if not heap:
            return
        _, chunk_no, record, records = heap[0]
        yield record
        following = next(records, None)
        if following is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (following.row_number, chunk_no, following, records))
