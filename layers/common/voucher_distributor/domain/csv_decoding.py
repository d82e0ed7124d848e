"""The bytes of a recipient CSV as records: encoding, line ends and quotes (see ``csv_input``).

``csv_input`` reads rows from what this module gives it; the rules both follow are in its
docstring. Kept apart so each module stays small enough to hold in one's head.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final

#: How much of a row too long to read is kept, so its results row says whose it was.
HEAD_CHARS: Final = 200


class CsvInputError(ValueError):
    """The whole file is unusable; the message says why and what to do about it."""


@dataclass(slots=True)
class ReadTally:
    """What reading a file passed over without a row to show for it; complete once the rows
    have been read to the end."""

    #: Blank lines (nothing but whitespace and delimiters) skipped, before the header or after.
    blank_lines: int = 0
    #: The delimiter the header was read with (``,``, ``;`` or tab), once it was read: the
    #: results file is written with it, so it opens as the input did.
    delimiter: str = ","
    #: The file began with a byte-order mark.
    bom: bool = False


# --- bytes -> text ------------------------------------------------------------------------------

_SIGNATURES: Final = (
    (b"\x1f\x8b", "is gzip-compressed: upload the uncompressed .csv file"),
    (b"PK\x03\x04", "is a ZIP archive or an Excel workbook (.xlsx): save it as 'CSV UTF-8'"),
    (b"PK\x05\x06", "is a ZIP archive: upload the .csv file itself"),
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "is an Excel 97-2003 workbook (.xls): save it as 'CSV UTF-8'",
    ),
    (b"%PDF-", "is a PDF document, not a CSV file"),
    (codecs.BOM_UTF32_LE, "is UTF-32 text: save it as 'CSV UTF-8'"),
    (codecs.BOM_UTF32_BE, "is UTF-32 text: save it as 'CSV UTF-8'"),
)
_BOMS: Final = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_SNIFF_BYTES: Final = 512
#: How many bytes from the first non-ASCII one decide between UTF-8 and Windows-1252.
_DECISION_BYTES: Final = 64 * 1024
_NON_ASCII = re.compile(rb"[\x80-\xff]")
_NOT_TEXT: Final = (
    "contains NUL characters, so it is not a text CSV (a binary file or a spreadsheet in "
    "another format?): save it as 'CSV UTF-8'"
)


def _cp1252_table() -> str:
    """Windows-1252 as browsers read it: the five unassigned bytes map to the same code points."""
    chars = []
    for byte in range(256):
        try:
            chars.append(bytes([byte]).decode("cp1252"))
        except UnicodeDecodeError:
            chars.append(chr(byte))
    return "".join(chars)


_CP1252: Final = _cp1252_table()


class Undecodable(Exception):
    """Damage found mid-stream; the row reader rewords it with where it happened."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class Decoder:
    """Turns the byte chunks into text chunks, choosing the encoding by the module's rule."""

    def __init__(self, tally: ReadTally) -> None:
        self._tally = tally
        self.encoding = "ascii"  # until a BOM or the first non-ASCII byte decides
        self._decode: Callable[[bytes, bool], str] | None = None
        self._pending_bytes: Callable[[], int] = lambda: 0
        self._held = b""  # undecided: the bytes from the first non-ASCII one, being judged
        self._consumed = 0

    def texts(self, chunks: Iterable[bytes]) -> Iterator[str]:
        blocks = iter(chunks)
        head = b""
        for block in blocks:
            head += block
            if len(head) >= _SNIFF_BYTES:
                break
        self._sniff(head)
        for block in itertools.chain((self._strip_bom(head),), blocks):
            text = self._feed(block, final=False)
            if text:
                yield text
        text = self._feed(b"", final=True)
        if text:
            yield text

    def _sniff(self, head: bytes) -> None:
        for signature, verdict in _SIGNATURES:
            if head.startswith(signature):
                raise CsvInputError(f"the file {verdict}")

    def _strip_bom(self, head: bytes) -> bytes:
        for bom, encoding in _BOMS:
            if head.startswith(bom):
                self._tally.bom = True
                self._use(encoding)
                self._consumed = len(bom)
                return head[len(bom) :]
        sample = head[:_SNIFF_BYTES]
        if b"\x00" in sample:
            even, odd = sample[0::2].count(0), sample[1::2].count(0)
            if min(even, odd) == 0 and max(even, odd) * 4 >= len(sample):
                raise CsvInputError(
                    "the file looks like UTF-16 text without a byte-order mark: "
                    "save it as 'CSV UTF-8'"
                )
            raise CsvInputError(f"the file {_NOT_TEXT}")
        return head

    def _use(self, encoding: str) -> None:
        self.encoding = encoding
        if encoding == "cp1252":
            self._decode = lambda data, _final: codecs.charmap_decode(data, "strict", _CP1252)[0]
            return
        incremental = codecs.getincrementaldecoder(encoding)("strict")
        self._decode = incremental.decode
        self._pending_bytes = lambda: len(incremental.getstate()[0])

    def _feed(self, data: bytes, *, final: bool) -> str:
        self._consumed += len(data)
        text = ""
        if self._decode is None:
            text, data = self._settle_encoding(data, final=final)
        if self._decode is not None and (data or final):
            pending = self._pending_bytes()
            try:
                text += self._decode(data, final)
            except UnicodeDecodeError as error:
                offset = self._consumed - len(data) - pending + error.start
                raise Undecodable(
                    f"byte {offset:,} is not valid {self.encoding.upper()} "
                    "(the file mixes encodings): save the file again as 'CSV UTF-8'"
                ) from None
        if "\x00" in text:
            raise Undecodable(f"the file {_NOT_TEXT}")
        return text

    def _settle_encoding(self, data: bytes, *, final: bool) -> tuple[str, bytes]:
        """Pass ASCII through until the first non-ASCII byte, then choose the encoding.

        Returns the ASCII text and the bytes left for the chosen decoder.
        """
        data, self._held = self._held + data, b""
        if data.isascii():
            return data.decode("ascii"), b""
        match = _NON_ASCII.search(data)
        assert match is not None  # not ASCII, so some byte is >= 0x80
        ascii_part, rest = data[: match.start()].decode("ascii"), data[match.start() :]
        if len(rest) < _DECISION_BYTES and not final:
            # Judge the same window whatever the block sizes, so a file always reads the same.
            self._held = rest
            return ascii_part, b""
        window = rest[:_DECISION_BYTES]
        try:
            codecs.getincrementaldecoder("utf-8")("strict").decode(window, final and window == rest)
        except UnicodeDecodeError:
            self._use("cp1252")
        else:
            self._use("utf-8")
        return ascii_part, rest


# --- text -> records ----------------------------------------------------------------------------

_LINE_END_OR_QUOTE = re.compile(r'[\r\n"]')
_OUTSIDE, _QUOTED, _QUOTE_AT_BLOCK_END = 0, 1, 2


class Framer:
    """Cuts the text into records (rows) without holding more than one row.

    It mirrors ``csv``'s reading of quotes, so that each record it yields parses to exactly one
    row, and it stops keeping a record that outgrows ``max_row_chars`` while still finding where
    that record ends.
    """

    def __init__(self, max_row_chars: int) -> None:
        self.delimiter = ","
        self.max_row_chars = max_row_chars
        #: Set with the last record when the input ended inside a quoted cell.
        self.unterminated = False
        #: The line the record yielded last starts on (1-based).
        self.record_line = 0
        #: The first ``HEAD_CHARS`` of the record yielded last when it was too long to keep.
        self.record_head = ""
        self._head = ""  # the same, of the record being read, once it outgrew the limit
        self._line = 1  # the line the record being read starts on
        self._breaks = 0  # line breaks inside it so far (in quoted cells)
        self._last_cr = False  # its text so far ends with CR (a CRLF may span two blocks)
        self._state = _OUTSIDE
        self._skip_lf = False  # the last block ended with CR: a leading LF belongs to it
        self._parts: list[str] = []  # the current record's text from earlier blocks
        self._size = 0  # its length, counted on even when the text is no longer kept

    def records(self, texts: Iterable[str]) -> Iterator[str | None]:
        """Each record's text without its line ending; None for a record too long to keep."""
        search = _LINE_END_OR_QUOTE.search
        for text in texts:
            end = len(text)
            mark, pos = self._resume(text)  # mark: where the record's text in this block starts
            while pos < end:
                if self._state == _QUOTED:
                    pos = self._skip_quoted(text, pos)
                    continue
                found = search(text, pos)
                if found is None:
                    break
                at = found.start()
                if text[at] == '"':
                    before = text[at - 1] if at > mark else self._last_char()
                    if before in ("", self.delimiter):
                        self._state = _QUOTED
                    pos = at + 1
                    continue
                yield self._finish(text[mark:at])
                if text[at] == "\r":
                    if at + 1 == end:
                        self._skip_lf = True
                    elif text[at + 1] == "\n":
                        at += 1
                pos = mark = at + 1
            if mark < end:
                self._keep(text[mark:])
        if self._size or self._state != _OUTSIDE:
            self.unterminated = self._state == _QUOTED
            yield self._finish("")

    def _resume(self, text: str) -> tuple[int, int]:
        """Where the record and the scan start in a new block, settling what the last left open."""
        if self._skip_lf:
            self._skip_lf = False
            start = 1 if text[:1] == "\n" else 0
            return start, start
        if self._state == _QUOTE_AT_BLOCK_END and text:
            if text[0] == '"':  # the pair of the quote that ended the last block
                self._state = _QUOTED
                return 0, 1
            self._state = _OUTSIDE
        return 0, 0

    def _skip_quoted(self, text: str, pos: int) -> int:
        """Move past the quoted part of a cell, or to the end of the block if it goes on."""
        quote = text.find('"', pos)
        if quote < 0:
            return len(text)
        if quote + 1 == len(text):
            self._state = _QUOTE_AT_BLOCK_END
        elif text[quote + 1] == '"':  # "" stands for one quote
            return quote + 2
        else:
            self._state = _OUTSIDE
        return quote + 1

    def _last_char(self) -> str:
        return self._parts[-1][-1] if self._parts else ""

    def _count_breaks(self, piece: str) -> None:
        """Count the line breaks inside a record (CRLF, LF or a lone CR, as between records)."""
        if not piece:
            return
        breaks = piece.count("\n") + piece.count("\r") - piece.count("\r\n")
        if self._last_cr and piece[0] == "\n":
            breaks -= 1  # the LF of a CRLF whose CR ended the last piece
        self._breaks += breaks
        self._last_cr = piece[-1] == "\r"

    def _keep(self, piece: str) -> None:
        self._count_breaks(piece)
        self._size += len(piece)
        if self._size <= self.max_row_chars:
            self._parts.append(piece)
        else:
            if not self._head:  # what says whose row it was: its start
                self._head = ("".join(self._parts) + piece)[:HEAD_CHARS]
            self._parts = [piece[-1]]  # too long to keep: only its last character still matters

    def _finish(self, piece: str) -> str | None:
        self._count_breaks(piece)
        self.record_line = self._line
        self._line += self._breaks + 1
        self._breaks = 0
        self._last_cr = False
        size = self._size + len(piece)
        if size > self.max_row_chars:
            record = None
            self.record_head = self._head or ("".join(self._parts) + piece)[:HEAD_CHARS]
        elif self._parts:
            self._parts.append(piece)
            record = "".join(self._parts)
        else:
            record = piece
        self._parts = []
        self._size = 0
        self._head = ""
        return record


class CellSplitter:
    """Splits one record into cells with a single long-lived ``csv`` reader (fast per row)."""

    def __init__(self, delimiter: str) -> None:
        self._line: str | None = None
        self._reader = csv.reader(self, delimiter=delimiter, strict=False)

    def __iter__(self) -> CellSplitter:
        return self

    def __next__(self) -> str:
        line, self._line = self._line, None
        if line is None:
            raise StopIteration
        return line

    def split(self, record: str) -> list[str]:
        self._line = record
        try:
            return next(self._reader)
        except StopIteration:
            return []
