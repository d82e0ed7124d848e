"""The inbox bucket: uploaded CSVs in, intermediate chunk files and results out."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import boto3
from botocore.exceptions import ClientError
from pydantic import BaseModel, TypeAdapter

from voucher_distributor.models.ledger import RecipientRecord

READ_CHUNK_BYTES = 256 * 1024
M = TypeVar("M", bound=BaseModel)


@lru_cache(maxsize=8)
def _list_adapter(model: type[M]) -> TypeAdapter[list[M]]:
    return TypeAdapter(list[model])  # type: ignore[valid-type]


class ObjectMissing(LookupError):
    """The object is not (or no longer) in the bucket."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    version: str  # version id when versioning is on, else the ETag
    metadata: dict[str, str]
    body: Iterator[bytes]


class Storage:
    def __init__(self, bucket: str, *, s3: Any = None) -> None:
        self.bucket = bucket
        self._s3 = s3 or boto3.client("s3")

    @property
    def client(self) -> Any:
        """The S3 client (for uses that take one, e.g. a retry's upload)."""
        return self._s3

    def open(self, key: str, *, version_id: str | None = None, start_byte: int = 0) -> StoredObject:
        """Stream an object in blocks; never read whole into memory. ``start_byte``: from there
        on (a ranged GET; ``size`` is then what is left)."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        if start_byte:
            kwargs["Range"] = f"bytes={start_byte}-"
        try:
            got = self._s3.get_object(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "NoSuchVersion", "404"}:
                raise ObjectMissing(f"s3://{self.bucket}/{key} does not exist") from exc
            raise
        version = got.get("VersionId") or str(got.get("ETag", "")).strip('"')
        metadata = {k.lower(): v for k, v in (got.get("Metadata") or {}).items()}
        return StoredObject(
            key=key,
            size=int(got.get("ContentLength", 0)),
            version=version,
            metadata=metadata,
            body=got["Body"].iter_chunks(READ_CHUNK_BYTES),
        )

    def put_bytes(self, key: str, data: bytes, *, content_type: str) -> None:
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def link(self, key: str, *, expires_s: int) -> str:
        """A presigned GET URL of an object: a short-lived link that needs no AWS credentials."""
        url: str = self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s
        )
        return url

    def exists(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
                return False
            raise
        return True

    def put_json(self, key: str, document: object) -> None:
        body = json.dumps(document, indent=2, ensure_ascii=False, default=str).encode("utf-8")
        self.put_bytes(key, body, content_type="application/json")

    def get_json(self, key: str) -> Any:
        """A JSON object's document, or None when there is no such object."""
        try:
            stored = self.open(key)
        except ObjectMissing:
            return None
        return json.loads(b"".join(stored.body))

    def read_json_versioned(self, key: str) -> tuple[Any, str] | None:
        """A JSON object's document and ETag (for :meth:`put_json_if_unchanged`), or None."""
        try:
            got = self._s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                return None
            raise
        return json.loads(got["Body"].read()), str(got["ETag"])

    def put_json_if_unchanged(self, key: str, document: object, etag: str) -> bool:
        """Replace the object only if it is still the version read (its ETag); False if not."""
        body = json.dumps(document, indent=2, ensure_ascii=False, default=str).encode("utf-8")
        try:
            self._s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType="application/json",
                IfMatch=etag,
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"PreconditionFailed", "412"}:
                return False
            raise
        return True

    def upload_file(self, key: str, path: Path, *, content_type: str) -> None:
        self._s3.upload_file(str(path), self.bucket, key, ExtraArgs={"ContentType": content_type})

    def put_records(self, key: str, records: Iterable[BaseModel]) -> None:
        """A small file of records (a chunk's recipients or outcomes) as JSON lines."""
        lines = (r.model_dump_json() for r in records)
        self.put_bytes(key, ("\n".join(lines) + "\n").encode(), content_type="application/x-ndjson")

    def read_records(self, key: str, model: type[M]) -> list[M]:
        stored = self.open(key)
        lines = [line for line in b"".join(stored.body).splitlines() if line.strip()]
        # One validation of the whole file as a JSON array (~1.4x faster than line by line).
        return _list_adapter(model).validate_json(b"[" + b",".join(lines) + b"]")

    def put_recipients(self, key: str, recipients: Iterable[RecipientRecord]) -> None:
        self.put_records(key, recipients)

    def read_recipients(self, key: str) -> list[RecipientRecord]:
        return self.read_records(key, RecipientRecord)

    def iter_json_lines(self, key: str) -> Iterator[dict[str, Any]]:
        """Stream a JSON-lines object line by line (missing object: nothing)."""
        try:
            stored = self.open(key)
        except ObjectMissing:
            return
        pending = b""
        for block in stored.body:
            pending += block
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    yield json.loads(line)
        if pending.strip():
            yield json.loads(pending)
