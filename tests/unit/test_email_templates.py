"""Per-program, per-language templates: where they live, which one wins, and the check."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voucher_distributor.domain.email_message import (
    DEFAULT_TEMPLATE,
    TEMPLATE_VARIABLES,
    EmailTemplate,
)
from voucher_distributor.domain.email_templates import (
    NotATemplateKey,
    TemplateRefused,
    candidates,
    check_template,
    error_document,
    error_key,
    languages_to_try,
    normalise_language,
    parse_template_key,
    refuse_unless_valid,
)

ACME, SPRING = "Acme Corp", "Spring Certification Drive"


def template(
    subject: str = "Voucher for {{ program }}", text: str = "", html: str = ""
) -> EmailTemplate:
    return EmailTemplate(
        subject=subject,
        text=text or "Hello {{ first_name }}, your code is {{ voucher_code }}.\n",
        html=html or "<p>Hello {{ first_name }}, your code is {{ voucher_code }}.</p>\n",
    )


# ---------------------------------------------------------------------- selection


def test_the_most_specific_folder_comes_first():
    assert candidates(ACME, SPRING, "de") == (
        f"{ACME}/{SPRING}/de",
        f"{ACME}/{SPRING}",
        "default/de",
        "default",
    )


def test_a_regional_language_falls_back_to_its_base_language_at_each_level():
    assert candidates(ACME, SPRING, "de-CH") == (
        f"{ACME}/{SPRING}/de-ch",
        f"{ACME}/{SPRING}/de",
        f"{ACME}/{SPRING}",
        "default/de-ch",
        "default/de",
        "default",
    )


@pytest.mark.parametrize("garbage", ["", "   ", "../../etc", "deutsch!", "d", "x" * 40, "de/x"])
def test_an_unknown_language_falls_back_to_the_language_free_folders(garbage):
    assert normalise_language(garbage) == ""
    assert candidates(ACME, SPRING, garbage) == (f"{ACME}/{SPRING}", "default")


@given(st.text(max_size=12), st.text(max_size=30), st.text(max_size=30))
def test_candidates_always_end_with_default_and_never_repeat(language, partner, program):
    found = candidates(partner, program, language)
    assert found[-1] == "default"
    assert len(found) == len(set(found))
    # Every language-specific folder is followed (somewhere) by its language-free parent.
    for folder in found:
        lang = folder.rsplit("/", 1)[-1]
        if lang in languages_to_try(language) and folder.startswith(f"{partner}/{program}/"):
            assert f"{partner}/{program}" in found[found.index(folder) :]


@given(st.sampled_from(["DE", " de ", "de_DE", "Pt-BR", "zh-Hant"]))
def test_language_tags_are_normalised(tag):
    assert normalise_language(tag) == tag.strip().lower().replace("_", "-")


# ---------------------------------------------------------------------- the keys


@pytest.mark.parametrize(
    ("key", "folder", "name"),
    [
        ("templates/default/subject.txt", "default", "subject.txt"),
        ("templates/default/de/body.html", "default/de", "body.html"),
        (f"templates/{ACME}/{SPRING}/body.txt", f"{ACME}/{SPRING}", "body.txt"),
        (f"templates/{ACME}/{SPRING}/fr/subject.txt", f"{ACME}/{SPRING}/fr", "subject.txt"),
    ],
)
def test_template_keys_name_their_folder(key, folder, name):
    parsed = parse_template_key(key)
    assert (parsed.folder, parsed.file_name) == (folder, name)
    assert parsed.error_key == error_key(folder) == f"templates/{folder}.error.json"


@pytest.mark.parametrize(
    "key",
    [
        "templates/default.error.json",
        f"templates/{ACME}/{SPRING}.error.json",
        "templates/default/notes.md",
        "templates/subject.txt",
        f"templates/{ACME}/subject.txt",
        "templates/default/German/subject.txt",
        f"templates/{ACME}/{SPRING}/de/extra/subject.txt",
        "templates/../default/subject.txt",
        "incoming/default/subject.txt",
    ],
)
def test_other_objects_are_no_template_files(key):
    with pytest.raises(NotATemplateKey):
        parse_template_key(key)


# ---------------------------------------------------------------------- the check


def test_the_shipped_default_passes_its_own_check():
    assert check_template(DEFAULT_TEMPLATE) == []


def test_every_contract_variable_may_be_used():
    body = " ".join(f"{{{{ {name} }}}}" for name in TEMPLATE_VARIABLES if name != "exams")
    body += " {% for exam in exams %}{{ exam.name }} {{ exam.code }} {{ loop.index }}{% endfor %}"
    assert check_template(template(text=body, html=body)) == []


def test_an_unknown_variable_is_refused_with_its_file_and_line():
    problems = check_template(
        template(
            html="<p>Hello {{ first_name }}</p>\n<p>{{ voucher_code }}</p>\n<p>{{ nme }}</p>\n"
        )
    )
    assert [(p.file, p.line) for p in problems] == [("body.html", 3)]
    assert "unknown variable 'nme'" in problems[0].problem
    assert "first_name" in problems[0].problem  # the allowed ones are named


def test_a_syntax_error_names_its_line():
    (problem,) = check_template(template(text="Hello\n{% if first_name %}\nno end\n"))
    assert problem.file == "body.txt"
    assert problem.line is not None
    assert "syntax" in problem.problem


def test_a_template_that_fails_to_render_with_sample_data_is_refused():
    # Known variables, but an exam has no 'price': StrictUndefined refuses it at upload time.
    text = "Code {{ voucher_code }}\n{% for exam in exams %}{{ exam.price }}{% endfor %}\n"
    (problem,) = check_template(template(text=text))
    assert problem.file == "body.txt"
    assert "sample data" in problem.problem
    assert problem.line == 2


def test_the_sandbox_refuses_reaching_into_python():
    (problem,) = check_template(template(text="{{ voucher_code.__class__.__mro__ }}\n"))
    assert problem.file == "body.txt"


def test_an_empty_subject_or_file_is_refused():
    assert check_template(template(subject="{% if replaces_code %}x{% endif %}"))
    (problem,) = check_template(EmailTemplate(subject="s", text=" ", html="<p>x</p>"))
    assert (problem.file, problem.problem) == ("body.txt", "the file is empty")


def test_refuse_unless_valid_raises_with_every_problem():
    with pytest.raises(TemplateRefused) as refused:
        refuse_unless_valid(template(subject="{{ a }}", text="{{ b }}"))
    assert [p.file for p in refused.value.problems] == ["subject.txt", "body.txt"]


@given(st.from_regex(r"[a-z][a-z_]{0,12}", fullmatch=True))
def test_any_name_outside_the_contract_is_refused_and_inside_accepted(name):
    problems = check_template(template(text=f"{{{{ {name} }}}} {{{{ voucher_code }}}}\n"))
    assert (problems == []) is (name in TEMPLATE_VARIABLES)


def test_the_error_document_lists_the_allowed_variables():
    (problem,) = check_template(template(text="{{ nme }}\n"))
    document = error_document(
        "default/de", [problem], checked_at="2026-12-03T10:00:00Z", in_use="the shipped default"
    )
    assert document["template"] == "templates/default/de/"
    assert document["accepted"] is False
    assert document["problems"] == [{"file": "body.txt", "line": 1, "problem": problem.problem}]
    assert document["allowedVariables"] == list(TEMPLATE_VARIABLES)
