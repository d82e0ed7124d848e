"""One recipient as read from the input, before anything is bought for it.

A row is never dropped for being bad: it carries a ``problem`` instead, so that the results file
can answer every input row, the bad ones with a reason a person can act on.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The fields we understand, in the order a results file shows them. Every other input column is
#: carried through untouched in ``InputRow.extra``.
KNOWN_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "external_id",
    "partner_name",
    "program_name",
    "reissue",
    "language",
)

#: Cell values of a ``reissue`` column that ask for a new voucher, and those that do not.
REISSUE_YES = frozenset({"yes", "true", "1", "y"})
REISSUE_NO = frozenset({"", "no", "false", "0", "n"})


@dataclass(frozen=True, slots=True)
class InputRow:
    """One data row of the input.

    ``row_number`` counts data records after the header, 1-based, the way a spreadsheet shows
    them: a record with embedded newlines is one row, and a blank row still takes its number
    although it yields no ``InputRow``. So row ``n`` is spreadsheet row ``n + 1`` (the header is
    row 1), and numbers may have gaps where the input had blank rows. ``line`` is the line of
    the file the row starts on (the header's is 1), what a text editor shows beside it.
    """

    row_number: int
    #: Normalised (trimmed, lower case) when valid; else the cell as given, trimmed.
    email: str
    first_name: str
    last_name: str
    external_id: str
    #: From the row when the file has the column and the cell is not blank; else None, and the
    #: file's metadata or the stack default applies.
    partner_name: str | None
    program_name: str | None
    #: Columns we do not know: header text -> cell, in header order. Every row carries every
    #: unknown column (``""`` when its cell is empty or missing), so the keys of any row are the
    #: file's extra-column list.
    extra: dict[str, str]
    #: None while the row is acceptable; else why it is rejected, in words a person can act on.
    problem: str | None = None
    #: The row asks for a new voucher even though the person may hold one for the program.
    reissue: bool = False
    #: The line of the file the row starts on (header = line 1); None for an HR request's
    #: inline recipients, which have no lines.
    line: int | None = None
    #: The row's ``language`` cell as typed ("" when the file has none): the e-mail template's
    #: language (``domain.email_templates``; a tag it does not know falls back).
    language: str = ""

    @property
    def acceptable(self) -> bool:
        return self.problem is None
