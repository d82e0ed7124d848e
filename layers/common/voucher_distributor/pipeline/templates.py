"""E-mail templates a team changes without a deploy: the upload check and the sender's look-up.

- :func:`check_template_upload`: the template function's use case. An object created under
  ``templates/`` names its folder; the folder's three files are read and checked together
  (``domain.email_templates.check_template``). Passed: they become the folder's accepted
  template (the ledger's ``templates`` store) and a standing ``.error.json`` is removed.
  Failed (or a file still missing): ``templates/<folder>.error.json`` says what, where and which
  variables may be used, and the folder's previous accepted template stays in use.
- :func:`template_for`: the template of one row's e-mail, most specific accepted first
  (partner/program/language, partner/program, default/language, default, the shipped default),
  read from the ledger only (never from the uploads), cached per warm container for
  ``TEMPLATE_CACHE_SECONDS``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from voucher_distributor.adapters.ledger.templates import AcceptedTemplate, TemplateStore
from voucher_distributor.domain.email_message import DEFAULT_TEMPLATE, EmailTemplate
from voucher_distributor.domain.email_templates import (
    FILE_NAMES,
    MAX_TEMPLATE_FILE_BYTES,
    PART_FILES,
    NotATemplateKey,
    TemplateFile,
    TemplateProblem,
    candidates,
    check_template,
    error_document,
    normalise_language,
    parse_template_key,
)
from voucher_distributor.pipeline.context import Services, log


@dataclass(frozen=True)
class TemplateCheck:
    """What a check did: ``accepted``, ``refused``, ``ignored`` or ``stale``."""

    outcome: str
    folder: str = ""
    problems: tuple[TemplateProblem, ...] = ()


def check_template_upload(services: Services, key: str) -> TemplateCheck:
    """Check the template folder an upload under ``templates/`` belongs to."""
    try:
        upload = parse_template_key(key)
    except NotATemplateKey as exc:
        if not key.endswith(".error.json"):
            log.warning("ignoring an object under templates/ that is no template file: %s", exc)
        return TemplateCheck("ignored")
    now = services.now()
    files, versions, problems = _read_folder(services, upload)
    template: EmailTemplate | None = None
    if not problems:
        template = EmailTemplate(subject=files["subject"], text=files["text"], html=files["html"])
        problems = check_template(template)
    if problems or template is None:
        return _refuse(services, upload, problems, now)
    error_stood = services.ledger.templates.accept(
        upload.folder, template, versions=versions, now=now
    )
    if error_stood is None:
        return TemplateCheck("stale", upload.folder)
    if error_stood:
        services.storage.client.delete_object(Bucket=services.storage.bucket, Key=upload.error_key)
    services.metrics.count("TemplatesAccepted")
    log.info("template %s accepted", upload.folder_key)
    return TemplateCheck("accepted", upload.folder)


def _read_folder(
    services: Services, upload: TemplateFile
) -> tuple[dict[str, str], dict[str, str], list[TemplateProblem]]:
    """The folder's three files (decoded), their versions, and what is wrong with them."""
    s3, bucket = services.storage.client, services.storage.bucket
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=upload.folder_key, Delimiter="/")
    present = {
        str(o["Key"]).removeprefix(upload.folder_key): int(o.get("Size", 0))
        for o in listed.get("Contents", [])
    }
    files: dict[str, str] = {}
    versions: dict[str, str] = {}
    problems: list[TemplateProblem] = []
    for part, name in PART_FILES:
        if name not in present:
            problems.append(
                TemplateProblem(
                    name, "missing: a template folder needs " + ", ".join(sorted(FILE_NAMES))
                )
            )
            continue
        if present[name] > MAX_TEMPLATE_FILE_BYTES:
            problems.append(
                TemplateProblem(
                    name, f"{present[name]:,} bytes; the limit is {MAX_TEMPLATE_FILE_BYTES:,}"
                )
            )
            continue
        got = s3.get_object(Bucket=bucket, Key=upload.folder_key + name)
        versions[name] = str(got.get("VersionId") or got.get("ETag", "")).strip('"')
        data: bytes = got["Body"].read(MAX_TEMPLATE_FILE_BYTES + 1)
        try:
            files[part] = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            problems.append(
                TemplateProblem(name, f"not UTF-8 (byte {exc.start}): save the file as UTF-8")
            )
    return files, versions, problems


def _refuse(
    services: Services, upload: TemplateFile, problems: list[TemplateProblem], now: int
) -> TemplateCheck:
    accepted_at = services.ledger.templates.refuse(upload.folder, now=now)
    in_use = (
        f"the template of {upload.folder_key} accepted at {_iso(accepted_at)}"
        if accepted_at is not None
        else "the next less specific template (this folder has none accepted)"
    )
    document = error_document(upload.folder, problems, checked_at=_iso(now), in_use=in_use)
    services.storage.put_json(upload.error_key, document)
    services.metrics.count("TemplatesRefused")
    log.warning("template %s refused: %s", upload.folder_key, "; ".join(str(p) for p in problems))
    return TemplateCheck("refused", upload.folder, tuple(problems))


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------- the sender's look-up

#: (table, folder) -> (read at, the accepted template or None): per warm container.
_cache: dict[tuple[str, str], tuple[float, AcceptedTemplate | None]] = {}


def forget_templates() -> None:
    """Drop what this process cached (tests, a local stack started again)."""
    _cache.clear()


def accepted_template(
    store: TemplateStore, folder: str, *, cache_seconds: int
) -> AcceptedTemplate | None:
    """The folder's accepted template, from the cache while it is fresh."""
    key = (store.table_name, folder)
    hit = _cache.get(key)
    now = time.monotonic()
    if hit is not None and now - hit[0] < cache_seconds:
        return hit[1]
    found = store.get_accepted(folder)
    if cache_seconds > 0:
        if len(_cache) > 500:
            _cache.clear()
        _cache[key] = (now, found)
    return found


@dataclass(frozen=True)
class ChosenTemplate:
    template: EmailTemplate
    #: The folder below templates/ it came from; "" for the shipped default.
    folder: str
    language: str
    accepted_at: int | None = None


def choose_template(
    store: TemplateStore,
    partner: str,
    program: str,
    language: str = "",
    *,
    default_language: str = "en",
    cache_seconds: int = 0,
) -> ChosenTemplate:
    """The most specific accepted template for a row (its ``language``, else the stack's):
    what the sender uses, and what ``email preview`` shows for a stack."""
    wanted = normalise_language(language) or normalise_language(default_language)
    for folder in candidates(partner, program, wanted):
        found = accepted_template(store, folder, cache_seconds=cache_seconds)
        if found is not None:
            return ChosenTemplate(found.template, folder, wanted, found.accepted_at)
    return ChosenTemplate(DEFAULT_TEMPLATE, "", wanted)


def template_for(services: Services, partner: str, program: str, language: str) -> EmailTemplate:
    """The template one row's e-mail is rendered with (see :func:`choose_template`)."""
    settings = services.settings
    return choose_template(
        services.ledger.templates,
        partner,
        program,
        language,
        default_language=settings.default_language,
        cache_seconds=settings.template_cache_seconds,
    ).template
