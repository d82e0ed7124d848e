"""A SAM template file as written (``SamTemplate``) and its CloudFormation translation, through
AWS's own transform (``samtranslator``), cached per document and parameters."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from voucher_distributor_cli.local.runner.specs import StackError

DEFAULT_REGION = "us-east-1"
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # moto accepts any credentials
    "AWS_SESSION_TOKEN": "testing",
}
_CODE_BUCKET = "voucher-distributor-local-code"  # CodeUri placeholders: s3://<this>/<local path>


@dataclass(frozen=True)
class TemplateResource:
    """One entry of ``Resources`` as written (no intrinsic evaluated)."""

    logical_id: str
    type: str
    properties: dict[str, Any]
    condition: str | None = None


class SamTemplate:
    """A SAM template file: the document as written, and its CloudFormation translation."""

    def __init__(self, document: Mapping[str, Any], base_dir: Path) -> None:
        self.document = dict(document)
        self.base_dir = base_dir

    @classmethod
    def load(cls, path: str | Path) -> SamTemplate:
        """Read a template file; relative ``CodeUri``s resolve against its directory."""
        file = Path(path).resolve()
        return cls(copy.deepcopy(_parse(file, file.stat().st_mtime_ns)), file.parent)

    @property
    def parameter_declarations(self) -> dict[str, dict[str, Any]]:
        """The ``Parameters`` section as written."""
        return dict(self.document.get("Parameters") or {})

    @property
    def globals_function(self) -> dict[str, Any]:
        """``Globals.Function`` as written."""
        return dict((self.document.get("Globals") or {}).get("Function") or {})

    @property
    def resources(self) -> dict[str, TemplateResource]:
        """Every resource as written, in template order."""
        return {
            lid: TemplateResource(
                lid, str(body["Type"]), dict(body.get("Properties") or {}), body.get("Condition")
            )
            for lid, body in self.document["Resources"].items()
        }

    def translate(self, parameters: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The template through the SAM transform (local code paths become placeholders)."""
        key = json.dumps([self.document, dict(parameters or {})], sort_keys=True, default=str)
        return copy.deepcopy(_translate(key))

    def code_path(self, code: Mapping[str, Any]) -> Path:
        """The local directory a translated function's ``Code`` placeholder stands for."""
        return (self.base_dir / str(code.get("S3Key", ""))).resolve()


@functools.lru_cache(maxsize=8)
def _parse(file: Path, _mtime_ns: int) -> Any:
    """A template file's document, cached while the file is unchanged."""
    from samtranslator.yaml_helper import yaml_parse  # noqa: PLC0415 - ~0.3 s to import

    return yaml_parse(file.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=8)
def _translate(key: str) -> dict[str, Any]:
    """samtranslator's transform, cached per (document, parameters): e2e runs start many stacks."""
    from samtranslator.model.exceptions import InvalidDocumentException  # noqa: PLC0415
    from samtranslator.parser.parser import Parser  # noqa: PLC0415
    from samtranslator.translator.translator import Translator  # noqa: PLC0415

    document, parameters = json.loads(key)
    glob = (document.get("Globals") or {}).get("Function") or {}
    for props in [glob, *(r.get("Properties") or {} for r in document["Resources"].values())]:
        for name in ("CodeUri", "ContentUri"):
            if isinstance(props.get(name), str) and not props[name].startswith("s3://"):
                props[name] = f"s3://{_CODE_BUCKET}/{props[name]}"
    try:
        translator = Translator({}, Parser(), boto_session=_boto3_session())
        translated: dict[str, Any] = translator.translate(document, parameter_values=parameters)
    except InvalidDocumentException as exc:
        raise StackError(f"the SAM transform rejects the template: {exc}") from exc
    return translated


@functools.cache
def _boto3_session() -> boto3.session.Session:
    """One session per process: loading service models is the slow part of making a client."""
    credentials = {key.lower(): value for key, value in DUMMY_CREDENTIALS.items()}
    return boto3.session.Session(region_name=DEFAULT_REGION, **credentials)
