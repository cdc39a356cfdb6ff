"""The ``s3`` object store: any S3-compatible bucket (AWS S3, Cloudflare R2, MinIO, GCS interop), through
boto3 with its standard credential chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an
instance role...). Links are presigned GETs that fix the content type and file name the bucket answers
with. botocore errors become StorageError (or ObjectNotFoundError) here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from comfyjobs.errors import ConfigError, ObjectNotFoundError, StorageError
from comfyjobs.settings import Settings
from comfyjobs.storage.objects import Link, content_disposition

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DELETE_BATCH = 1000  # DeleteObjects takes at most this many keys
_MISSING = {"404", "NoSuchKey", "NotFound"}


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _MISSING


@contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        if _missing(exc):
            raise ObjectNotFoundError(f"no object {what[:200]!r}") from exc
        error = exc.response.get("Error", {})
        raise StorageError(f"S3 refused {what[:200]}: {error.get('Code')}: {error.get('Message')}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"S3 unreachable for {what[:200]}: {exc}") from exc


class S3ObjectStore:
    backend = "s3"

    def __init__(self, client: S3Client, bucket: str, prefix: str = "") -> None:
        self._s3 = client
        self.bucket = bucket
        self.prefix = prefix.lstrip("/")

    @classmethod
    def from_settings(cls, settings: Settings) -> S3ObjectStore:
        if not settings.s3_bucket:
            raise ConfigError("STORAGE_BACKEND=s3 needs S3_BUCKET")
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": settings.s3_addressing_style},
            retries={"mode": "standard", "max_attempts": 4},
            connect_timeout=10,
            read_timeout=60,
        )
        secret = settings.s3_secret_access_key
        session = boto3.session.Session(  # keys given as settings, else the standard AWS chain
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret is not None else None,
        )
        # Resolved now, once: presigning later must not look for credentials (an instance-metadata
        # request) on the API's event loop.
        if session.get_credentials() is None:
            raise ConfigError(
                "STORAGE_BACKEND=s3 but no AWS credentials were found "
                "(set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY, or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
            )
        client = session.client(
            "s3",
            endpoint_url=str(settings.s3_endpoint_url) if settings.s3_endpoint_url else None,
            region_name=settings.s3_region,
            config=config,
        )
        store = cls(client, settings.s3_bucket, settings.s3_prefix)
        store.check()
        return store

    def _key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def check(self) -> None:
        """Fails fast at start when the bucket is missing or the credentials are refused."""
        try:
            with _translated(f"bucket {self.bucket}"):
                self._s3.head_bucket(Bucket=self.bucket)
        except ObjectNotFoundError:
            raise ConfigError(f"S3 bucket {self.bucket!r} does not exist at this endpoint") from None

    def put_file(self, key: str, source: Path, content_type: str) -> None:
        with _translated(key):
            self._s3.upload_file(
                str(source), self.bucket, self._key(key), ExtraArgs={"ContentType": content_type}
            )
        source.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        with _translated(key):
            self._s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type)

    def exists(self, key: str) -> bool:
        try:
            with _translated(key):
                self._s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except ObjectNotFoundError:
            return False
        return True

    @contextmanager
    def _open(self, key: str) -> Iterator[BinaryIO]:
        with _translated(key):
            body: Any = self._s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        try:
            yield cast(BinaryIO, body)
        finally:
            body.close()

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        return self._open(key)

    def delete(self, key_or_prefix: str) -> int:
        if not key_or_prefix.endswith("/"):
            with _translated(key_or_prefix):
                self._s3.delete_object(Bucket=self.bucket, Key=self._key(key_or_prefix))
            return 1
        count = 0
        with _translated(key_or_prefix):
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(key_or_prefix)
            )
            batch: list[str] = []
            for page in pages:
                batch += [item["Key"] for item in page.get("Contents", [])]
                while len(batch) >= DELETE_BATCH:
                    count += self._delete_batch(batch[:DELETE_BATCH])
                    batch = batch[DELETE_BATCH:]
            if batch:
                count += self._delete_batch(batch)
        return count

    def _delete_batch(self, keys: list[str]) -> int:
        reply = self._s3.delete_objects(
            Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
        )
        errors = reply.get("Errors", [])
        if errors:
            raise StorageError(f"S3 did not delete {len(errors)} object(s): {errors[0].get('Message')}")
        return len(keys)

    def link(self, key: str, *, content_type: str, filename: str, ttl_s: int) -> Link:
        url = self._s3.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self._key(key),
                "ResponseContentType": content_type,
                "ResponseContentDisposition": content_disposition(content_type, filename),
            },
            ExpiresIn=ttl_s,
        )
        return Link(url=url, expires_at=datetime.now(UTC) + timedelta(seconds=ttl_s))
