"""The results' e-mail column and the deliveries CSV come from one pass over one Query."""

from __future__ import annotations

import csv
import io

from voucher_distributor.domain.results_csv import ResultRow
from voucher_distributor.models.email import EmailDelivery, EmailEventRecord, EmailState
from voucher_distributor.pipeline.report import DELIVERIES_COLUMNS, DeliveriesCsv, with_email_status


def _row(n: int, status: str = "assigned") -> ResultRow:
    return ResultRow(n, f"p{n}@example.com", "P", str(n), "", "Acme", "Spring", status)  # type: ignore[arg-type]


def _delivery(n: int, *states: EmailState) -> EmailDelivery:
    history = [EmailEventRecord(at=1_700_000_000 + i, state=s, source="test", delivery_id=f"d{n}.1")
               for i, s in enumerate(states)]  # fmt: skip
    return EmailDelivery(batch_id="b", row_number=n, delivery_id=f"d{n}.1", state=states[-1],
                         to_address=f"p{n}@example.com", voucher_code=f"C{n}", updated_at=1,
                         history=history)  # fmt: skip


def test_each_row_gets_its_state_and_every_item_is_passed_once_in_order() -> None:
    rows = [_row(2), _row(3, "rejected"), _row(4), _row(5)]
    items = [_delivery(1, EmailState.SENT),  # before the first row (a row no longer listed)
             _delivery(2, EmailState.SENT, EmailState.DELIVERED),
             _delivery(4, EmailState.BOUNCED),
             _delivery(9, EmailState.SENT)]  # fmt: skip  # after the last row
    passed: list[int] = []
    merged = list(
        with_email_status(rows, iter(items), passed=lambda d: passed.append(d.row_number))
    )
    assert [(r.row_number, r.email_status) for r in merged] == [
        (2, "delivered"), (3, "not-sent"), (4, "bounced"), (5, "scheduled")
    ]  # fmt: skip
    assert passed == [1, 2, 4, 9]


def test_the_deliveries_csv_has_one_line_per_step() -> None:
    out = io.StringIO()
    history = DeliveriesCsv(out)
    history.write(_delivery(2, EmailState.SENT, EmailState.DELIVERED))
    history.write(_delivery(4, EmailState.BOUNCED))
    lines = list(csv.reader(io.StringIO(out.getvalue().removeprefix("\ufeff"))))
    assert tuple(lines[0]) == DELIVERIES_COLUMNS
    assert [(line[0], line[2], line[3], line[5]) for line in lines[1:]] == [
        ("2", "C2", "1", "sent"), ("2", "C2", "1", "delivered"), ("4", "C4", "1", "bounced")
    ]  # fmt: skip


def test_a_slow_rewrite_waits_four_times_its_time_within_sqs_longest_delay() -> None:
    from voucher_distributor.pipeline.email import refresh_window

    assert refresh_window(60, 2.0) == 60  # deployed: a rewrite under 15 s keeps the minute
    assert refresh_window(60, 30.0) == 120
    assert refresh_window(5, 6.1) == 25  # locally (5 s): a 2,500-row rewrite of 6 s
    assert refresh_window(60, 1_000.0) == 900
