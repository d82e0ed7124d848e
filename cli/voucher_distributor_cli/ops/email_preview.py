"""``voucher-distributor email preview``: the voucher e-mail rendered, before a real run.

The template is a local folder (``--template DIR``: ``subject.txt``, ``body.txt``,
``body.html``; offline), the accepted one of a stack (``--stack``/``--endpoint-url``: chosen as
the sender chooses it, from the ledger, by partner, program and language), or the shipped
default. It is checked as an upload is (an unknown variable is refused), then rendered for
sample data, or for row N of a real CSV read by the pipeline's own reader (``--row FILE:N``),
and written as ``.eml``, ``.html`` and ``.txt``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from voucher_distributor.domain.csv_input import CsvInputError, read_rows
from voucher_distributor.domain.email_message import (
    DEFAULT_TEMPLATE,
    TEMPLATE_VARIABLES,
    EmailRenderError,
    EmailTemplate,
    Sender,
    VoucherEmail,
    build_mime,
    render_email,
)
from voucher_distributor.domain.email_templates import (
    MAX_TEMPLATE_FILE_BYTES,
    PART_FILES,
    SAMPLE_EMAILS,
    TEMPLATES_PREFIX,
    check_template,
    normalise_language,
)
from voucher_distributor.domain.recipients import InputRow
from voucher_distributor.pipeline.templates import choose_template
from voucher_distributor_cli.ops.target import OpsError, Target

SAMPLE_TO = "ada.lovelace@example.com"
SAMPLE_FROM = "vouchers@example.com"
READ_BLOCK = 1 << 16


class TemplateNotUsable(OpsError):
    """The template is refused (unknown variable, syntax, does not render): exit 2."""


@dataclass(frozen=True)
class Preview:
    eml: Path
    html: Path
    txt: Path
    subject: str
    #: Where the template came from, as a person reads it.
    template: str
    language: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "eml": str(self.eml),
            "html": str(self.html),
            "txt": str(self.txt),
            "subject": self.subject,
            "template": self.template,
            "language": self.language,
        }

    def text(self) -> str:
        return (
            f"template: {self.template} (language {self.language or '-'})\n"
            f"subject:  {self.subject}\n"
            f"wrote {self.eml}\n      {self.html}\n      {self.txt}"
        )


def parse_row_option(value: str) -> tuple[Path, int]:
    """``people.csv:3`` -> (path, 3); the row number as the results file's ``row`` column."""
    path, colon, number = value.rpartition(":")
    if not colon or not path or not number.isdigit() or int(number) < 1:
        raise OpsError(f"--row {value!r}: write FILE:N, e.g. people.csv:1 (N counts from 1)")
    return Path(path), int(number)


def read_row(path: Path, number: int) -> InputRow:
    """Row ``number`` of a recipient CSV, read by the pipeline's own reader."""
    if not path.is_file():
        raise OpsError(f"--row: {path} is not a file")
    with path.open("rb") as handle:
        try:
            for row in read_rows(iter(lambda: handle.read(READ_BLOCK), b"")):
                if row.row_number == number:
                    return row
        except CsvInputError as exc:
            raise OpsError(f"--row: {path} cannot be read: {exc}") from exc
    raise OpsError(f"--row: {path} has no data row {number}")


def read_template_dir(folder: Path) -> EmailTemplate:
    """A local template folder's three files (UTF-8)."""
    if not folder.is_dir():
        raise OpsError(f"--template {folder}: not a folder (it holds {_names()})")
    parts: dict[str, str] = {}
    for part, name in PART_FILES:
        path = folder / name
        if not path.is_file():
            raise OpsError(f"--template {folder}: {name} is missing (a template holds {_names()})")
        data = path.read_bytes()
        if len(data) > MAX_TEMPLATE_FILE_BYTES:
            raise OpsError(f"{path}: {len(data):,} bytes; the limit is {MAX_TEMPLATE_FILE_BYTES:,}")
        try:
            parts[part] = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise OpsError(f"{path}: not UTF-8 (byte {exc.start}): save it as UTF-8") from exc
    return EmailTemplate(subject=parts["subject"], text=parts["text"], html=parts["html"])


def _names() -> str:
    return ", ".join(name for _, name in PART_FILES)


def preview(
    *,
    out_dir: Path,
    partner: str | None = None,
    program: str | None = None,
    language: str | None = None,
    template_dir: Path | None = None,
    row: tuple[Path, int] | None = None,
    target: Target | None = None,
    now: float | None = None,
) -> Preview:
    """Render and write the preview; :class:`TemplateNotUsable` when the template is refused."""
    env = target.function_env if target is not None else {}
    input_row = read_row(*row) if row is not None else None
    sample = SAMPLE_EMAILS[0]
    email = replace(
        sample,
        partner=(input_row.partner_name if input_row else None) or partner or sample.partner,
        program=(input_row.program_name if input_row else None) or program or sample.program,
        booking_url=env.get("BOOKING_URL", sample.booking_url) if target else sample.booking_url,
        support_email=(
            env.get("SUPPORT_EMAIL", sample.support_email) if target else sample.support_email
        ),
    )
    if input_row is not None:
        email = replace(email, first_name=input_row.first_name, last_name=input_row.last_name)
    wanted = normalise_language(language) or normalise_language(
        input_row.language if input_row else ""
    )
    template, where, wanted = _template(
        template_dir, target, email, wanted, env.get("DEFAULT_LANGUAGE", "en")
    )
    problems = check_template(template)
    if problems:
        listed = "\n".join(f"  {p}" for p in problems)
        raise TemplateNotUsable(
            f"the template ({where}) is refused:\n{listed}\n"
            f"the variables a template may use: {', '.join(TEMPLATE_VARIABLES)}"
        )
    return _write(out_dir, email, template, where, wanted, env, input_row, now)


def _template(
    template_dir: Path | None,
    target: Target | None,
    email: VoucherEmail,
    wanted: str,
    default_language: str,
) -> tuple[EmailTemplate, str, str]:
    if template_dir is not None:
        return read_template_dir(template_dir), str(template_dir), wanted
    if target is None:
        return DEFAULT_TEMPLATE, "the shipped default", wanted
    chosen = choose_template(
        target.ledger.templates,
        email.partner,
        email.program,
        wanted,
        default_language=default_language,
    )
    where = (
        f"{TEMPLATES_PREFIX}{chosen.folder}/ as accepted"
        if chosen.folder
        else "the shipped default (the stack has no accepted template for it)"
    )
    return chosen.template, where, chosen.language


def _write(
    out_dir: Path,
    email: VoucherEmail,
    template: EmailTemplate,
    where: str,
    language: str,
    env: dict[str, str],
    input_row: InputRow | None,
    now: float | None,
) -> Preview:
    try:
        rendered = render_email(email, template)
    except EmailRenderError as exc:  # checked already; a row's own data can still fail
        raise TemplateNotUsable(str(exc)) from exc
    sender = Sender(
        email=env.get("SENDER_EMAIL") or SAMPLE_FROM,
        name=env.get("SENDER_NAME", ""),
        reply_to=env.get("REPLY_TO_EMAIL", ""),
    )
    to = (input_row.email if input_row and input_row.acceptable else "") or SAMPLE_TO
    raw = build_mime(rendered, sender=sender, to=to, sent_at=int(now or time.time()))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {suffix: out_dir / f"preview.{suffix}" for suffix in ("eml", "html", "txt")}
    paths["eml"].write_bytes(raw)
    paths["html"].write_text(rendered.html, encoding="utf-8")
    paths["txt"].write_text(rendered.text, encoding="utf-8")
    return Preview(
        eml=paths["eml"],
        html=paths["html"],
        txt=paths["txt"],
        subject=rendered.subject,
        template=where,
        language=language,
    )
