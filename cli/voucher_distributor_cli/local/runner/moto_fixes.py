"""Where moto's emulation differs from AWS in a way the pipeline can see, made as AWS does it.

- **S3 event notifications carry no ``versionId``.** On a versioned bucket AWS puts the
  object's version id in ``s3.object.versionId`` (and a ``sequencer``), so two uploads of one
  key in the same second are two batches. moto 5 leaves both out, so ingest would read the
  newest version for both events. Patched in the moto server's process (it runs in ours).
"""

from __future__ import annotations

from typing import Any

_applied = False


def apply() -> None:
    """Idempotent: patch once per process."""
    global _applied  # noqa: PLW0603 - a once-per-process switch
    if _applied:
        return
    from moto.s3 import notifications  # noqa: PLC0415

    original = notifications._get_s3_event

    def with_version(event_name: str, bucket: Any, key: Any, notification_id: str) -> Any:
        event = original(event_name, bucket, key, notification_id)
        version = getattr(key, "version_id", None)
        if version and version != "null":
            for record in event.get("Records", []):
                record["s3"]["object"]["versionId"] = version
        return event

    notifications._get_s3_event = with_version
    _applied = True
