"""The voucher e-mail: its default template, rendering, the address SES is given, and MIME.

Pure (no I/O). Rendering uses Jinja2's ``SandboxedEnvironment`` with ``StrictUndefined``, the
HTML part autoescaped: a recipient's name is data, never template code (``{{ 7*7 }}`` in a name
prints as typed, ``<script>`` is escaped). The template variables are the contract the next
issue's per-program templates keep: ``first_name``, ``last_name``, ``voucher_code``, ``program``,
``partner``, ``exams`` (each ``name`` and ``code``), ``expires_on``, ``booking_url``,
``support_email`` and ``replaces_code`` (empty unless a reissue replaced an older code), and
``reminder`` (0, or the days left when the message reminds the holder before the expiry).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2 import Template
    from jinja2.sandbox import SandboxedEnvironment

#: The variables every template may use (and the default one does).
TEMPLATE_VARIABLES = (
    "first_name",
    "last_name",
    "voucher_code",
    "program",
    "partner",
    "exams",
    "expires_on",
    "booking_url",
    "support_email",
    "replaces_code",
    "reminder",
)

DEFAULT_SUBJECT = (
    "{% if reminder %}Reminder: your exam voucher for {{ program }} expires in {{ reminder }} days"
    "{% elif replaces_code %}Your new exam voucher for {{ program }}"
    "{% else %}Your exam voucher for {{ program }}{% endif %}"
)

DEFAULT_TEXT = """\
Hello {{ first_name or "there" }},

{% if reminder %}
A reminder: your exam voucher for {{ program }} has not been used yet, and it expires in
{{ reminder }} days.
{% elif replaces_code %}
This is your new exam voucher for {{ program }}. It replaces your previous code
{{ replaces_code }}, which you should no longer use.
{% else %}
Here is your exam voucher for {{ program }}.
{% endif %}

Your voucher code:

    {{ voucher_code }}

{% if exams %}
It covers:
{% for exam in exams %}
  - {{ exam.name }} ({{ exam.code }})
{% endfor %}

{% endif %}
{% if expires_on %}
Use it by {{ expires_on }}.

{% endif %}
{% if booking_url %}
To book your exam, go to {{ booking_url }} and enter the code when you pay.
{% else %}
Enter the code when you book your exam.
{% endif %}
{% if support_email %}

Questions? Write to {{ support_email }}.
{% endif %}

Sent on behalf of {{ partner }}.
"""

DEFAULT_HTML = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Your exam voucher</title>
</head>
<body style="margin:0;padding:0;background:#f4f5f7;">
<div style="max-width:560px;margin:0 auto;padding:24px 16px;font-family:Arial,Helvetica,sans-serif;\
font-size:16px;line-height:1.5;color:#1f2933;">
<p>Hello {{ first_name or "there" }},</p>
{% if reminder %}
<p>A reminder: your exam voucher for {{ program }} has not been used yet, and it expires in
<strong>{{ reminder }} days</strong>.</p>
{% elif replaces_code %}
<p>This is your <strong>new</strong> exam voucher for {{ program }}. It replaces your previous
code <span style="font-family:monospace;">{{ replaces_code }}</span>, which you should no longer
use.</p>
{% else %}
<p>Here is your exam voucher for {{ program }}.</p>
{% endif %}
<p style="margin:24px 0;padding:16px;background:#ffffff;border:1px solid #d0d5dd;\
border-radius:8px;text-align:center;font-family:monospace;font-size:22px;\
letter-spacing:1px;word-break:break-all;">{{ voucher_code }}</p>
{% if exams %}
<p>It covers:</p>
<ul>
{% for exam in exams %}<li>{{ exam.name }} ({{ exam.code }})</li>
{% endfor %}</ul>
{% endif %}
{% if expires_on %}<p>Use it by <strong>{{ expires_on }}</strong>.</p>{% endif %}
{% if booking_url %}
<p style="margin:24px 0;"><a href="{{ booking_url }}" style="display:inline-block;\
padding:12px 20px;background:#1a56db;color:#ffffff;text-decoration:none;border-radius:6px;">\
Book your exam</a></p>
<p>Enter the code when you pay.</p>
{% else %}
<p>Enter the code when you book your exam.</p>
{% endif %}
{% if support_email %}<p>Questions? Write to
<a href="mailto:{{ support_email }}">{{ support_email }}</a>.</p>{% endif %}
<p style="color:#6b7280;font-size:13px;">Sent on behalf of {{ partner }}.</p>
</div>
</body>
</html>
"""


@dataclass(frozen=True)
class Exam:
    name: str
    code: str


@dataclass(frozen=True)
class VoucherEmail:
    """What the template is given (the template contract's variables)."""

    first_name: str
    last_name: str
    voucher_code: str
    program: str
    partner: str
    exams: tuple[Exam, ...] = ()
    expires_on: str = ""
    booking_url: str = ""
    support_email: str = ""
    replaces_code: str = ""
    reminder: int = 0

    def variables(self) -> dict[str, Any]:
        return {
            "first_name": self.first_name,
            "last_name": self.last_name,
            "voucher_code": self.voucher_code,
            "program": self.program,
            "partner": self.partner,
            "exams": [{"name": e.name, "code": e.code} for e in self.exams],
            "expires_on": self.expires_on,
            "booking_url": self.booking_url,
            "support_email": self.support_email,
            "replaces_code": self.replaces_code,
            "reminder": self.reminder,
        }


def expires_on(expires_utc: str) -> str:
    """``2027-03-31T23:59:59Z`` as a person reads it: ``31 March 2027`` ("" when unknown)."""
    if not expires_utc:
        return ""
    try:
        when = datetime.fromisoformat(expires_utc.replace("Z", "+00:00"))
    except ValueError:
        return expires_utc
    return f"{when.day} {when:%B %Y}"


@dataclass(frozen=True)
class EmailTemplate:
    """A subject, a plain-text and an HTML body (Jinja2 sources)."""

    subject: str = DEFAULT_SUBJECT
    text: str = DEFAULT_TEXT
    html: str = DEFAULT_HTML


DEFAULT_TEMPLATE = EmailTemplate()


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


class EmailRenderError(ValueError):
    """The template could not be rendered for this row: the row fails with why, nothing is sent.
    ``part``: which of ``subject``, ``text`` and ``html`` failed."""

    def __init__(self, message: str, *, part: str = "subject") -> None:
        super().__init__(message)
        self.part = part


class AddressNotSendable(ValueError):
    """SES cannot send to this address as typed: the row fails with why, the code stays held."""


@lru_cache(maxsize=2)
def _environment(*, html: bool) -> SandboxedEnvironment:
    from jinja2 import StrictUndefined  # noqa: PLC0415 - only the sending function renders
    from jinja2.sandbox import SandboxedEnvironment  # noqa: PLC0415

    return SandboxedEnvironment(
        autoescape=html,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=not html,
        lstrip_blocks=not html,
    )


@lru_cache(maxsize=64)
def _compiled(source: str, *, html: bool) -> Template:
    """A template compiled once per process (compiling costs ~20x rendering)."""
    return _environment(html=html).from_string(source)


def render_email(email: VoucherEmail, template: EmailTemplate = DEFAULT_TEMPLATE) -> RenderedEmail:
    """The three parts of ``email`` rendered; :class:`EmailRenderError` says why not."""
    from jinja2 import TemplateError  # noqa: PLC0415

    variables = email.variables()
    parts: dict[str, str] = {}
    for part, source, html in (
        ("subject", template.subject, False),
        ("text", template.text, False),
        ("html", template.html, True),
    ):
        try:
            parts[part] = _compiled(source, html=html).render(variables)
        except TemplateError as exc:
            raise EmailRenderError(
                f"the e-mail template's {part} could not be rendered: {type(exc).__name__}: {exc}",
                part=part,
            ) from exc
    subject = " ".join(parts["subject"].split())
    if not subject:
        raise EmailRenderError("the e-mail template's subject rendered empty")
    return RenderedEmail(subject=subject, text=parts["text"], html=parts["html"])


# ---------------------------------------------------------------------- addresses


def ses_address(address: str) -> str:
    """``address`` as SES takes it: the domain in punycode (IDNA), the local part as typed.

    Raises :class:`AddressNotSendable` for a non-ASCII local part (SES refuses them; there is
    no ASCII spelling of one) or a domain that has no IDNA form.
    """
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain:
        raise AddressNotSendable("the address has no local part and domain around one @")
    if not local.isascii():
        raise AddressNotSendable(
            "SES cannot send to an address with non-ASCII characters before the @; "
            "ask the person for an ASCII address and resend to it"
        )
    if domain.isascii():
        return f"{local}@{domain.lower()}"
    import idna  # noqa: PLC0415 - IDNA 2008 with UTS 46 mapping, as mail systems use today

    try:
        ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise AddressNotSendable(
            f"the domain has no internationalised (IDNA) form SES can send to: {exc}"
        ) from exc
    return f"{local}@{ascii_domain.lower()}"


# ---------------------------------------------------------------------- MIME


@dataclass(frozen=True)
class Sender:
    """Who the e-mail is from (template parameters SenderEmail, SenderName, ReplyToEmail)."""

    email: str
    name: str = ""
    reply_to: str = ""
    #: Extra headers every message carries (e.g. ``X-SES-CONFIGURATION-SET`` is not needed:
    #: SendEmail names the set).
    headers: tuple[tuple[str, str], ...] = field(default=())


def build_mime(rendered: RenderedEmail, *, sender: Sender, to: str, sent_at: int) -> bytes:
    """The message as SES's Raw content (RFC 5322, CRLF): multipart/alternative text + HTML."""
    message = EmailMessage()
    message["Subject"] = rendered.subject
    message["From"] = Address(display_name=sender.name, addr_spec=ses_address(sender.email))
    message["To"] = Address(addr_spec=to)
    if sender.reply_to:
        message["Reply-To"] = Address(addr_spec=ses_address(sender.reply_to))
    message["Date"] = format_datetime(datetime.fromtimestamp(sent_at, UTC))
    message["MIME-Version"] = "1.0"
    for name, value in sender.headers:
        message[name] = value
    message.set_content(rendered.text, subtype="plain", charset="utf-8")
    message.add_alternative(rendered.html, subtype="html", charset="utf-8")
    return message.as_bytes(policy=SMTP)
