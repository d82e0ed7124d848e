"""The results file: one row per input row, safe to open in a spreadsheet.

Format choices, for the people who open it in Excel:

* UTF-8 **with** a byte-order mark: without it Excel reads UTF-8 as the local ANSI code page and
  "Müller" turns into "MÃ¼ller". Our own reader, Python's ``utf-8-sig`` and most tools skip it.
* CRLF line endings (RFC 4180), minimal quoting; embedded newlines stay inside quoted cells.
* The input's own delimiter (``;`` from a German Excel, tab): the file opens in the same
  spreadsheet the way the input did. ``read_results`` reads any of them back.
* Any cell that a spreadsheet would run as a formula gets a leading ``'`` (OWASP CSV injection
  guidance); everything else is written exactly as given, non-ASCII included.
* Expiry as ISO 8601 UTC with a ``Z`` (``2025-12-31T23:59:59Z``).
* The input's unknown columns come after ours, in their original order; one whose name clashes
  with ours is headed ``<name> (input)``.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal, Protocol

from voucher_distributor.domain.recipients import InputRow

RESULT_COLUMNS: Final = (
    "row",
    "line",
    "email",
    "first_name",
    "last_name",
    "external_id",
    "partner",
    "program",
    "status",
    "voucher_code",
    "purchase_code",
    "expires_utc",
    "reason",
    "email_status",
)

#: ``existing``: the person already held a voucher for the program; it is shown, none bought.
#: ``would-assign``: a dry run's row that the real run would buy a voucher for.
ResultStatus = Literal["assigned", "existing", "would-assign", "rejected", "failed"]

#: Cell starts a spreadsheet may treat as a formula (OWASP "CSV Injection").
FORMULA_PREFIXES: Final = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: str) -> str:
    """The cell as a spreadsheet will show it as text, never run it as a formula."""
    if value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def format_expiry(moment: datetime | None) -> str:
    """ISO 8601 in UTC with ``Z``; a naive time is taken to be UTC already (as the API's are)."""
    if moment is None:
        return ""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class ResultRow:
    """What happened to one input row."""

    row_number: int
    email: str
    first_name: str
    last_name: str
    external_id: str
    partner: str
    program: str
    status: ResultStatus
    voucher_code: str = ""
    purchase_code: str = ""
    expires_utc: datetime | None = None
    reason: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)
    #: The line of the input file the row starts on (header = line 1); None for an HR
    #: request's inline recipients (the cell is left empty).
    line: int | None = None
    #: The row's e-mail state (models.email.EmailState): ``not-sent`` for a row with no code,
    #: with e-mail off or opted out.
    email_status: str = "not-sent"

    @classmethod
    def rejected(
        cls, row: InputRow, reason: str, *, partner: str = "", program: str = ""
    ) -> ResultRow:
        """A rejected input row, its own fields echoed back so the person can find and fix it."""
        return cls(
            row_number=row.row_number,
            email=row.email,
            first_name=row.first_name,
            last_name=row.last_name,
            external_id=row.external_id,
            partner=partner or row.partner_name or "",
            program=program or row.program_name or "",
            status="rejected",
            reason=reason,
            extra=row.extra,
            line=row.line,
        )


def result_header(extra_columns: Sequence[str]) -> list[str]:
    """Our columns, then the input's own, renamed only where a name would clash with ours."""
    taken = {name.casefold() for name in RESULT_COLUMNS}
    header = list(RESULT_COLUMNS)
    for name in extra_columns:
        unique = name
        while unique.casefold() in taken:
            unique = f"{unique} (input)"
        taken.add(unique.casefold())
        header.append(unique)
    return header


def _delimiter(text: str) -> str:
    """A results file's delimiter: its header starts ``row`` and then the delimiter."""
    delimiter = text[len("row") : len("row") + 1] if text.startswith("row") else ","
    return delimiter if delimiter in {",", ";", "\t"} else ","


def read_results(data: bytes) -> list[dict[str, str]]:
    """The rows of a results file as ``{column: cell}``, whichever delimiter it was written
    with (its header starts ``row`` and then the delimiter)."""
    text = data.decode("utf-8-sig")
    delimiter = _delimiter(text)
    return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))


class TextSink(Protocol):
    """Anything text can be written to: an open file, a temporary file, ``io.StringIO``."""

    def write(self, text: str, /) -> object: ...


class ResultsCsvWriter:
    """Writes the results CSV to a text stream opened with ``encoding="utf-8", newline=""``.

    The header (and the BOM, unless ``bom=False``) is written at construction, so even a batch
    with no rows yields a file that says what its columns are.
    """

    def __init__(
        self,
        out: TextSink,
        extra_columns: Sequence[str],
        *,
        bom: bool = True,
        delimiter: str = ",",
    ) -> None:
        self._extra_columns = tuple(extra_columns)
        self._known_extra = frozenset(self._extra_columns)
        if bom:
            out.write("\ufeff")
        self._writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
        self._writer.writerow([spreadsheet_safe(name) for name in result_header(extra_columns)])

    def write(self, row: ResultRow) -> None:
        unknown = row.extra.keys() - self._known_extra
        if unknown:
            raise ValueError(
                f"row {row.row_number} has columns the header lacks: {sorted(unknown)}"
            )
        cells = [
            str(row.row_number),
            "" if row.line is None else str(row.line),
            row.email,
            row.first_name,
            row.last_name,
            row.external_id,
            row.partner,
            row.program,
            row.status,
            row.voucher_code,
            row.purchase_code,
            format_expiry(row.expires_utc),
            row.reason,
            row.email_status,
            *(row.extra.get(name, "") for name in self._extra_columns),
        ]
        self._writer.writerow([spreadsheet_safe(cell) for cell in cells])


# ------------------------------------------------------------------ reading it back, a page


#: What the API calls our columns in JSON (``GET …/assignments``); ``email_status`` when the
#: file has it.
_JSON_NAMES: Final = {
    "row": "row",
    "line": "line",
    "email": "email",
    "first_name": "firstName",
    "last_name": "lastName",
    "external_id": "externalId",
    "partner": "partner",
    "program": "program",
    "status": "status",
    "voucher_code": "voucherCode",
    "purchase_code": "purchaseCode",
    "expires_utc": "expiresUtc",
    "email_status": "emailStatus",
    "reason": "reason",
}


@dataclass(frozen=True)
class ResultsPage:
    """Rows as JSON objects, and where the next page starts: (byte offset, its row number)."""

    rows: list[dict[str, object]]
    next: tuple[int, int] | None


def _unsafe(value: str) -> str:
    """A cell as it was before :func:`spreadsheet_safe` (JSON needs no formula guard)."""
    if value.startswith("'") and value[1:].startswith(FORMULA_PREFIXES):
        return value[1:]
    return value


def _lines(blocks: Iterable[bytes], counter: list[int]) -> Iterator[str]:
    """The file's lines (with their endings) as text, adding each one's bytes to ``counter``.

    ``csv.reader`` takes one line at a time and stops at a record's end, so after each record
    the counter holds the byte offset where the next one starts (a newline byte never occurs
    inside a UTF-8 character, so splitting bytes at ``\\n`` is safe)."""
    pending = b""
    for block in blocks:
        pending += block
        *whole, pending = pending.split(b"\n")
        for line in whole:
            counter[0] += len(line) + 1
            yield (line + b"\n").decode("utf-8")
    if pending:
        counter[0] += len(pending)
        yield pending.decode("utf-8")


def read_results_page(
    file: Iterable[bytes],
    rest: Iterable[bytes] | None = None,
    *,
    size: int,
    rest_from: int = 0,
    first_row: int | None = None,
    find_row: bool = False,
) -> ResultsPage:
    """A page of a results file. ``file``: the file from its start (its header is read);
    ``rest``: the file from a page token's byte offset ``rest_from`` on (``None``: the first
    page, read on from ``file``); ``first_row``: the row number the token says starts there
    (``ValueError`` if not: a token for another file, or made up). ``find_row``: read ``file``
    from its start up to ``first_row`` instead (the file was rewritten since the token was
    given, so its offset no longer holds)."""
    counter = [0]
    lines = _lines(file, counter)
    first = next(lines, None)
    if first is None:
        return ResultsPage([], None)
    delimiter = _delimiter(first.lstrip("\ufeff"))
    reader = csv.reader(itertools.chain([first], lines), delimiter=delimiter)
    raw_header = next(reader)
    header = [_unsafe(name.lstrip("\ufeff")) for name in raw_header]
    extra = header[len(RESULT_COLUMNS) :]
    base = 0
    if rest is not None:
        base, counter = rest_from, [0]
        reader = csv.reader(_lines(rest, counter), delimiter=delimiter)
    rows: list[dict[str, object]] = []
    while True:
        start = base + counter[0]
        try:
            cells = next(reader)
        except StopIteration:
            if find_row and first_row is not None and not rows:
                raise ValueError("the page does not start where the token says") from None
            return ResultsPage(rows, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ValueError(str(exc)) from exc
        values = dict(zip(header, (_unsafe(c) for c in cells), strict=False))
        number = values.get("row", "")
        if not number.isdigit():
            raise ValueError("the page does not start at a row")
        if find_row and first_row is not None and not rows and int(number) < first_row:
            continue
        if first_row is not None and not rows and int(number) != first_row:
            raise ValueError("the page does not start where the token says")
        if len(rows) == size:
            return ResultsPage(rows, (start, int(number)))
        rows.append(_json_row(values, extra))


def _json_row(values: Mapping[str, str], extra: Sequence[str]) -> dict[str, object]:
    row: dict[str, object] = {}
    for name, key in _JSON_NAMES.items():
        if name not in values:
            continue
        value = values[name]
        if name in {"row", "line"}:
            row[key] = int(value) if value.isdigit() else None
        elif name == "status":
            row[key] = value
        else:
            row[key] = value or None
    if extra:
        row["extra"] = {name: values.get(name, "") for name in extra if name not in _JSON_NAMES}
    return row
