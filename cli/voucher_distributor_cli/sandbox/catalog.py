"""The sandbox's data file: partners and programs (and optionally past purchases and vouchers).

The file uses the API's own wire shapes, validated by the project's models, so a catalogue that
loads here is one the client can parse too. Problems are reported with the file name and the
offending entry, because a user editing their own ``--data`` file needs to find the mistake.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from voucher_distributor.domain.emails import is_valid_email
from voucher_distributor.models.certiverse import (
    CertiverseModel,
    PartnerVoucherModel,
    PartnerVoucherPartnerModel,
    PartnerVoucherProgramModel,
    PartnerVoucherPurchaseModel,
)

ModelT = TypeVar("ModelT", bound=CertiverseModel)

#: Optional key of a purchase entry in the data file: who bought it (not part of the wire shape).
PURCHASED_BY_EMAIL_KEY = "purchasedByEmail"


class CatalogError(ValueError):
    """The data file is missing, not JSON, or not a valid catalogue."""


@dataclass(frozen=True)
class Catalog:
    """What the sandbox starts with."""

    partners: list[PartnerVoucherPartnerModel]
    programs: list[PartnerVoucherProgramModel]
    purchases: list[PartnerVoucherPurchaseModel] = field(default_factory=list)
    vouchers: list[PartnerVoucherModel] = field(default_factory=list)
    #: Purchase id -> buyer e-mail, for the ``purchasedByEmail`` filter of seeded purchases.
    purchased_by: dict[str, str] = field(default_factory=dict)


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Load and validate a catalogue file; None loads the bundled ``data/sample.json``."""
    if path is None:
        source = "bundled sample.json"
        text = (
            resources.files("voucher_distributor_cli.sandbox")
            .joinpath("data", "sample.json")
            .read_text(encoding="utf-8")
        )
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise CatalogError(f"{source}: cannot read the data file: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{source}: not valid JSON: {exc}") from exc
    return parse_catalog(data, source=source)


def parse_catalog(data: object, *, source: str = "catalogue") -> Catalog:
    """Validate an already-decoded catalogue (the JSON object of a data file)."""
    if not isinstance(data, dict):
        raise CatalogError(f"{source}: the top level must be a JSON object")
    partners = _entries(data, "partners", PartnerVoucherPartnerModel, source, required=True)
    programs = _entries(data, "programs", PartnerVoucherProgramModel, source, required=True)
    # Names differing only in case are allowed (the POST then needs the exact case).
    _unique(source, "partner name", [p.name.strip() for p in partners])
    _unique(source, "program name", [p.name.strip() for p in programs])
    _unique(source, "partner id", [p.id for p in partners])
    _unique(source, "program id", [p.id for p in programs])

    purchased_by: dict[str, str] = {}
    raw_purchases = data.get("purchases", [])
    if isinstance(raw_purchases, list):
        cleaned: list[object] = []
        for index, raw_entry in enumerate(raw_purchases):
            entry = raw_entry
            if isinstance(raw_entry, dict) and PURCHASED_BY_EMAIL_KEY in raw_entry:
                entry = dict(raw_entry)
                email = entry.pop(PURCHASED_BY_EMAIL_KEY)
                if not isinstance(email, str) or not is_valid_email(email):
                    raise CatalogError(
                        f"{source}: purchases[{index}].{PURCHASED_BY_EMAIL_KEY} is not an e-mail"
                    )
                if "id" in entry:
                    purchased_by[str(entry["id"])] = email
            cleaned.append(entry)
        data = {**data, "purchases": cleaned}
    purchases = _entries(data, "purchases", PartnerVoucherPurchaseModel, source, required=False)
    vouchers = _entries(data, "vouchers", PartnerVoucherModel, source, required=False)
    _unique(source, "purchase code", [p.voucher_purchase_code.casefold() for p in purchases])
    _unique(source, "voucher code", [v.voucher_code.casefold() for v in vouchers])
    return Catalog(
        partners=partners,
        programs=programs,
        purchases=purchases,
        vouchers=vouchers,
        purchased_by=purchased_by,
    )


def _entries(
    data: dict[str, Any], key: str, model: type[ModelT], source: str, *, required: bool
) -> list[ModelT]:
    if key not in data:
        if required:
            raise CatalogError(f"{source}: missing the {key!r} list")
        return []
    raw = data[key]
    if not isinstance(raw, list):
        raise CatalogError(f"{source}: {key!r} must be a list")
    items: list[ModelT] = []
    for index, entry in enumerate(raw):
        try:
            items.append(model.model_validate(entry))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in err['loc']) or '(entry)'}: {err['msg']}"
                for err in exc.errors()
            )
            raise CatalogError(f"{source}: {key}[{index}] is invalid: {problems}") from exc
    return items


def _unique(source: str, what: str, values: list[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise CatalogError(f"{source}: duplicate {what} {value!r}")
        seen.add(value)
