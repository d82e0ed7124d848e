from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voucher_distributor.domain import email_message as em


def _email(**overrides):
    values = {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "voucher_code": "CLD-7Q2M-XK4P",
        "program": "Cloud Practitioner",
        "partner": "Acme Training",
        "exams": (em.Exam("Cloud Basics", "CB-101"), em.Exam("Cloud Security", "CS-201")),
        "expires_on": "31 March 2027",
        "booking_url": "https://book.example.com/exams",
        "support_email": "help@acme.example",
        "replaces_code": "",
    }
    values.update(overrides)
    return em.VoucherEmail(**values)


def test_the_default_message_carries_everything_the_person_needs():
    rendered = em.render_email(_email())
    assert rendered.subject == "Your exam voucher for Cloud Practitioner"
    for part in (rendered.text, rendered.html):
        for needle in (
            "Ada",
            "CLD-7Q2M-XK4P",
            "Cloud Practitioner",
            "Cloud Basics (CB-101)",
            "Cloud Security (CS-201)",
            "31 March 2027",
            "https://book.example.com/exams",
            "help@acme.example",
            "Acme Training",
        ):
            assert needle in part, (needle, part)
    assert "replaces" not in rendered.text
    assert 'name="viewport"' in rendered.html  # readable on a phone
    assert "max-width:560px" in rendered.html


def test_a_reissue_says_it_replaces_the_old_code():
    rendered = em.render_email(_email(replaces_code="OLD-1111"))
    assert rendered.subject == "Your new exam voucher for Cloud Practitioner"
    assert "replaces your previous code\nOLD-1111" in rendered.text
    assert "OLD-1111" in rendered.html
    assert "CLD-7Q2M-XK4P" in rendered.text


def test_missing_optional_facts_leave_no_gaps():
    rendered = em.render_email(
        _email(first_name="", exams=(), expires_on="", booking_url="", support_email="")
    )
    assert rendered.text.startswith("Hello there,\n")
    assert "Enter the code when you book your exam." in rendered.text
    assert "It covers" not in rendered.text
    assert "\n\n\n" not in rendered.text
    assert "Questions" not in rendered.html


def test_template_syntax_in_a_name_prints_as_typed():
    rendered = em.render_email(_email(first_name="{{ 7*7 }}", last_name="{% for x in y %}"))
    assert "Hello {{ 7*7 }}," in rendered.text
    assert "{{ 7*7 }}" in rendered.html
    assert "49" not in rendered.text


def test_markup_in_a_name_is_escaped_in_html_and_literal_in_text():
    rendered = em.render_email(_email(first_name='<script>alert("x")</script>'))
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in rendered.html
    assert 'Hello <script>alert("x")</script>,' in rendered.text


def test_a_template_naming_an_unknown_variable_fails_with_why():
    broken = em.EmailTemplate(subject="Hi {{ nickname }}")
    with pytest.raises(em.EmailRenderError, match=r"subject could not be rendered.*nickname"):
        em.render_email(_email(), broken)


def test_the_sandbox_refuses_reaching_into_python():
    hostile = em.EmailTemplate(text="{{ voucher_code.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(em.EmailRenderError, match="text could not be rendered"):
        em.render_email(_email(), hostile)


def test_a_template_with_a_syntax_error_fails_with_why():
    with pytest.raises(em.EmailRenderError, match="html could not be rendered"):
        em.render_email(_email(), em.EmailTemplate(html="{% if %}"))


def test_an_empty_subject_is_a_render_failure():
    with pytest.raises(em.EmailRenderError, match="subject rendered empty"):
        em.render_email(_email(), em.EmailTemplate(subject="{{ last_name[:0] }}"))


def test_the_default_template_uses_only_the_contract_variables():
    from jinja2 import meta
    from jinja2.sandbox import SandboxedEnvironment

    from voucher_distributor.domain.email_message import DEFAULT_TEMPLATE

    env = SandboxedEnvironment()
    used: set[str] = set()
    for source in (DEFAULT_TEMPLATE.subject, DEFAULT_TEMPLATE.text, DEFAULT_TEMPLATE.html):
        used |= meta.find_undeclared_variables(env.parse(source))
    assert used <= set(em.TEMPLATE_VARIABLES)
    assert set(_email().variables()) == set(em.TEMPLATE_VARIABLES)


def test_expiry_dates_read_as_a_person_writes_them():
    assert em.expires_on("2027-03-31T23:59:59Z") == "31 March 2027"
    assert em.expires_on("2027-01-05T00:00:00+00:00") == "5 January 2027"
    assert em.expires_on("") == ""
    assert em.expires_on("soon") == "soon"


@pytest.mark.parametrize(
    ("typed", "sent"),
    [
        ("ada@example.com", "ada@example.com"),
        ("ada@bücher.de", "ada@xn--bcher-kva.de"),
        ("Ada@Example.COM", "Ada@example.com"),
        ("a.b+c@straße.example", "a.b+c@xn--strae-oqa.example"),
    ],
)
def test_unicode_domains_go_out_in_punycode(typed, sent):
    assert em.ses_address(typed) == sent


def test_a_non_ascii_local_part_is_refused_with_the_reason():
    with pytest.raises(em.AddressNotSendable, match="non-ASCII characters before the @"):
        em.ses_address("jürgen@example.de")


def test_a_domain_without_an_idna_form_is_refused():
    with pytest.raises(em.AddressNotSendable, match="IDNA"):
        em.ses_address("a@" + "ü" * 70 + ".de")


@given(st.text(max_size=80))
def test_ses_address_answers_an_ascii_address_or_a_typed_refusal(raw):
    try:
        sent = em.ses_address(raw)
    except em.AddressNotSendable:
        return
    assert sent.isascii()
    assert sent.count("@") >= 1


def _parse(raw: bytes) -> EmailMessage:
    parsed = message_from_bytes(raw, policy=default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_the_mime_message_has_both_parts_and_the_sender_headers():
    rendered = em.render_email(_email(first_name="Zoë"))
    raw = em.build_mime(
        rendered,
        sender=em.Sender("vouchers@acme.example", "Acme Exams", "help@acme.example"),
        to=em.ses_address("ada@bücher.de"),
        sent_at=1_800_000_000,
    )
    assert b"\r\n" in raw
    assert raw.isascii()
    message = _parse(raw)
    assert message["From"] == "Acme Exams <vouchers@acme.example>"
    assert message["To"] == "ada@xn--bcher-kva.de"
    assert message["Reply-To"] == "help@acme.example"
    assert message["Subject"] == rendered.subject
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    assert "Zoë" in text.get_content()
    assert "CLD-7Q2M-XK4P" in html.get_content()


def test_a_sender_name_with_non_ascii_letters_is_encoded():
    raw = em.build_mime(
        em.render_email(_email()),
        sender=em.Sender("vouchers@acme.example", "Académie Ü"),
        to="ada@example.com",
        sent_at=0,
    )
    message = _parse(raw)
    assert message["From"] == "Académie Ü <vouchers@acme.example>"
    assert message["Reply-To"] is None


def test_a_subject_cannot_inject_headers():
    rendered = em.render_email(
        _email(),
        em.EmailTemplate(subject="Hi {{ first_name }}"),
    )
    hostile = em.render_email(
        _email(first_name="x\r\nBcc: evil@example.com"),
        em.EmailTemplate(subject="Hi {{ first_name }}"),
    )
    assert rendered.subject == "Hi Ada"
    raw = em.build_mime(hostile, sender=em.Sender("a@acme.example"), to="b@example.com", sent_at=0)
    message = _parse(raw)
    assert message["Bcc"] is None
    assert message["Subject"] == "Hi x Bcc: evil@example.com"
