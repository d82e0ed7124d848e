"""Per-program, per-language e-mail templates: where they live, which one wins, and the check.

Pure (no I/O). A team keeps its templates in the inbox bucket under ``templates/``:

- ``templates/default/`` and ``templates/<partner>/<program>/`` (the names exactly as
  Certiverse spells them), each holding ``subject.txt``, ``body.txt`` and ``body.html``;
- in either, optionally one folder per language: ``templates/default/de/``,
  ``templates/Acme Corp/Spring Certification Drive/fr/``.

For a row the most specific accepted template wins (:func:`candidates`): partner/program/lang,
partner/program, default/lang, default, then the shipped default (``DEFAULT_TEMPLATE``).

:func:`check_template` is what an upload (and ``email preview``) must pass: every variable the
template reads is one of ``TEMPLATE_VARIABLES`` (Jinja2's ``meta.find_undeclared_variables`` on
the parsed source), and the three parts render under ``StrictUndefined`` in the sandbox with
sample data, for a first issue and for a reissue. A failure is a :class:`TemplateProblem` with
the part, the line and what to change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from voucher_distributor.domain.email_message import (
    TEMPLATE_VARIABLES,
    EmailRenderError,
    EmailTemplate,
    Exam,
    VoucherEmail,
    render_email,
)

TEMPLATES_PREFIX: Final = "templates/"
DEFAULT_FOLDER: Final = "default"
#: The file of each part of a template, in the order they are checked.
PART_FILES: Final = (("subject", "subject.txt"), ("text", "body.txt"), ("html", "body.html"))
FILE_NAMES: Final = frozenset(name for _, name in PART_FILES)
ERROR_SUFFIX: Final = ".error.json"
#: Largest template file accepted (each part): an e-mail, not a website.
MAX_TEMPLATE_FILE_BYTES: Final = 100_000

#: A language tag as a folder or a cell may give it: ``de``, ``pt-br``, ``zh-hant``.
_LANGUAGE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{2,8}){0,2}")


def normalise_language(value: str | None) -> str:
    """``"DE"``, ``" de_DE "`` -> ``"de"`` / ``"de-de"``; "" when empty or not a language tag
    (such a row falls back to the stack's default language)."""
    tag = (value or "").strip().casefold().replace("_", "-")
    return tag if _LANGUAGE.fullmatch(tag) else ""


def languages_to_try(language: str) -> tuple[str, ...]:
    """``de-ch`` -> ``("de-ch", "de")``; ``de`` -> ``("de",)``; "" -> ()."""
    tag = normalise_language(language)
    if not tag:
        return ()
    base = tag.split("-", 1)[0]
    return (tag,) if base == tag else (tag, base)


def template_folder(partner: str | None, program: str | None, language: str = "") -> str:
    """The folder (below ``templates/``, no trailing slash) of one template."""
    base = f"{partner}/{program}" if partner and program else DEFAULT_FOLDER
    return f"{base}/{language}" if language else base


def candidates(partner: str, program: str, language: str) -> tuple[str, ...]:
    """The folders to look in for a row, most specific first (the shipped default is last,
    and is no folder)."""
    languages = languages_to_try(language)
    found: list[str] = []
    if partner and program:
        found += [template_folder(partner, program, lang) for lang in languages]
        found.append(template_folder(partner, program))
    found += [template_folder(None, None, lang) for lang in languages]
    found.append(DEFAULT_FOLDER)
    return tuple(dict.fromkeys(found))


@dataclass(frozen=True)
class TemplateFile:
    """One uploaded object under ``templates/``, as its key says."""

    folder: str  # below templates/, e.g. "Acme Corp/Spring Certification Drive/de"
    file_name: str  # subject.txt, body.txt or body.html

    @property
    def folder_key(self) -> str:
        return f"{TEMPLATES_PREFIX}{self.folder}/"

    @property
    def error_key(self) -> str:
        """Where a failed check is answered: ``templates/<folder>.error.json``."""
        return error_key(self.folder)


def error_key(folder: str) -> str:
    return f"{TEMPLATES_PREFIX}{folder}{ERROR_SUFFIX}"


class NotATemplateKey(ValueError):
    """An object under ``templates/`` that is no template file (says what would be one)."""


def parse_template_key(key: str) -> TemplateFile:
    """``templates/Acme Corp/Spring Certification Drive/de/body.html`` -> its folder and file.

    Raises :class:`NotATemplateKey` for an error answer, another file name, or a folder that
    is neither ``default[/<lang>]`` nor ``<partner>/<program>[/<lang>]``.
    """
    if not key.startswith(TEMPLATES_PREFIX):
        raise NotATemplateKey(f"{key!r} is not under {TEMPLATES_PREFIX}")
    if key.endswith(ERROR_SUFFIX):
        raise NotATemplateKey("an answer to a check, not a template file")
    *folders, name = key.removeprefix(TEMPLATES_PREFIX).split("/")
    if name not in FILE_NAMES:
        raise NotATemplateKey(
            f"{name!r} is not a template file: name them subject.txt, body.txt and body.html"
        )
    if any(not part.strip() or part in {".", ".."} for part in folders):
        raise NotATemplateKey("the key has an empty or relative folder name")
    shape_ok = False
    if folders and folders[0] == DEFAULT_FOLDER:
        shape_ok = len(folders) == 1 or (
            len(folders) == 2 and normalise_language(folders[1]) == folders[1]
        )
    elif len(folders) == 2:
        shape_ok = True
    elif len(folders) == 3:
        shape_ok = normalise_language(folders[2]) == folders[2]
    if not shape_ok:
        raise NotATemplateKey(
            "put template files in templates/default/, templates/default/<language>/, "
            "templates/<partner>/<program>/ or templates/<partner>/<program>/<language>/ "
            "(a language folder is a lower-case tag such as de or pt-br)"
        )
    return TemplateFile(folder="/".join(folders), file_name=name)


# ---------------------------------------------------------------------- the check


@dataclass(frozen=True)
class TemplateProblem:
    """Why a template is refused: which file, which line (when known), what to change."""

    file: str
    problem: str
    line: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "problem": self.problem}

    def __str__(self) -> str:
        where = f"{self.file} line {self.line}" if self.line else self.file
        return f"{where}: {self.problem}"


class TemplateRefused(ValueError):
    """A template failed its check; ``problems`` says where and why."""

    def __init__(self, problems: list[TemplateProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


#: The sample rows every template must render for: a first issue with everything, and a
#: reissue with the optional values empty (so both branches of an ``{% if %}`` are tried).
SAMPLE_EMAILS: Final = (
    VoucherEmail(
        first_name="Ada",
        last_name="Lovelace",
        voucher_code="SAMPLE-VOUCHER-0001",
        program="Spring Certification Drive",
        partner="Acme Corp",
        exams=(Exam("Cloud Fundamentals", "CF-100"), Exam("Cloud Architect", "CA-200")),
        expires_on="31 March 2027",
        booking_url="https://booking.example/exams",
        support_email="support@acme.example",
    ),
    VoucherEmail(
        first_name="",
        last_name="",
        voucher_code="SAMPLE-VOUCHER-0002",
        program="Spring Certification Drive",
        partner="Acme Corp",
        replaces_code="SAMPLE-VOUCHER-0001",
    ),
)


def file_of(part: str) -> str:
    return dict(PART_FILES)[part]


def check_template(template: EmailTemplate) -> list[TemplateProblem]:
    """Every problem of ``template`` (empty: it may be used): syntax, unknown variables, a
    render with the sample data that fails or leaves the subject empty."""
    from jinja2 import TemplateSyntaxError, meta  # noqa: PLC0415

    from voucher_distributor.domain.email_message import _environment  # noqa: PLC0415

    problems: list[TemplateProblem] = []
    for part, name in PART_FILES:
        source: str = getattr(template, part)
        if not source.strip():
            problems.append(TemplateProblem(name, "the file is empty"))
            continue
        environment = _environment(html=part == "html")
        try:
            parsed = environment.parse(source)
        except TemplateSyntaxError as exc:
            problems.append(TemplateProblem(name, f"template syntax: {exc.message}", exc.lineno))
            continue
        unknown = meta.find_undeclared_variables(parsed) - set(TEMPLATE_VARIABLES)
        for variable in sorted(unknown):
            problems.append(
                TemplateProblem(
                    name,
                    f"unknown variable {variable!r}: use only " + ", ".join(TEMPLATE_VARIABLES),
                    _first_line_of(parsed, variable),
                )
            )
    if problems:
        return problems
    for sample in SAMPLE_EMAILS:
        problem = _render_problem(template, sample)
        if problem is not None:
            return [problem]
    return []


def refuse_unless_valid(template: EmailTemplate) -> EmailTemplate:
    """``template`` when it passes :func:`check_template`; else :class:`TemplateRefused`."""
    problems = check_template(template)
    if problems:
        raise TemplateRefused(problems)
    return template


def _first_line_of(parsed: Any, variable: str) -> int | None:
    from jinja2 import nodes  # noqa: PLC0415

    lines = [
        node.lineno
        for node in parsed.find_all(nodes.Name)
        if node.name == variable and node.ctx == "load"
    ]
    return min(lines) if lines else None


def _render_problem(template: EmailTemplate, sample: VoucherEmail) -> TemplateProblem | None:
    try:
        render_email(sample, template)
    except EmailRenderError as exc:
        part = getattr(exc, "part", "subject")
        cause = exc.__cause__
        return TemplateProblem(
            file_of(part),
            f"does not render with sample data: {_cause_text(cause) if cause else exc}",
            _template_line(cause),
        )
    return None


def _cause_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _template_line(exc: BaseException | None) -> int | None:
    """The template line a rendering error was raised on (Jinja2 rewrites its traceback so
    that the template's frames carry the template's line numbers)."""
    if exc is None:
        return None
    line = getattr(exc, "lineno", None)
    if isinstance(line, int):
        return line
    tb = exc.__traceback__
    found: int | None = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            found = tb.tb_lineno
        tb = tb.tb_next
    return found


def error_document(
    folder: str, problems: Iterable[TemplateProblem], *, checked_at: str, in_use: str
) -> dict[str, Any]:
    """The ``templates/<folder>.error.json`` answer to a refused upload."""
    return {
        "template": f"{TEMPLATES_PREFIX}{folder}/",
        "accepted": False,
        "checkedAt": checked_at,
        "problems": [p.as_json() for p in problems],
        "allowedVariables": list(TEMPLATE_VARIABLES),
        "exams": "a list; each exam has name and code ({% for exam in exams %})",
        "inUse": in_use,
    }
