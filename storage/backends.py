"""Where the bytes of stored files live: the contract, declared once, and its two stores.

`FileStore` is the whole contract (as Django's SessionBase is for sessions): every caller goes
through storage/store.py, which asks `current()` for the configured store and never touches a
path or a bucket itself. Keys follow the seed's layout on both stores,

    {userId}/{sessionId}/uploads/{fileId}{.ext}    uploaded files
    {userId}/{sessionId}/outputs/{fileId}{.ext}    files an execution made

relative to SANDBOX_STORAGE_PATH on local disk, below SANDBOX_S3_PREFIX in the bucket.

- `LocalStore` (the default): files on the local volume, private to the server (0600 files,
  0700 folders), written under a temporary name and renamed into place when complete, a
  second name for the same bytes as a hard link.
- `S3Store` (SANDBOX_STORAGE_BACKEND=s3): any S3-compatible object store through boto3. An
  object appears only when its upload completed (a single PUT, or CompleteMultipartUpload for
  large files: S3 never shows part of a multipart upload, and s3transfer aborts a failed
  one); a second name for the same bytes is a second row pointing at the same key, so the
  bytes are stored once, as with a hard link, and the object goes when its last row does.

Faults are the API's: a full volume or bucket quota is StorageFull (507), an object store that
does not answer is StorageUnavailable (503). Nothing is ever read whole into memory: uploads,
outputs, inputs and downloads move in blocks of at most SANDBOX_S3_PART_MB.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

from sandbox_project.errors import ApiError

log = logging.getLogger("sandbox.storage")
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
BLOCK = 1 << 20


class StorageFull(ApiError):
    """The storage volume has no room: a 507 that says so; the caller removes what it began."""

    def __init__(self, what: str):
        super().__init__(507, "insufficient_storage", f"The server's file storage is full: {what} could not be stored. "
                         "Nothing was kept; retry once space is freed.")


class StorageUnavailable(ApiError):
    """The object store does not answer (down, unreachable, refusing our credentials)."""

    def __init__(self, detail: str):
        log.error("the object store is not answering", extra={"error": detail[:300]})
        super().__init__(503, "storage_unavailable", "The server's file storage is not answering; retry shortly",
                         headers={"Retry-After": "5"}, detail=detail[:200])


@contextmanager
def no_space_is(what: str):
    """Turns a full disk into StorageFull; any other OSError stays what it is."""
    try:
        yield
    except OSError as error:
        if error.errno in NO_SPACE:
            raise StorageFull(what) from None
        raise


class FileStore:
    """The storage contract. `key` is always a relative key of the seed's layout (above)."""

    name = "?"
    # Whether save_link() gives the second name a key of its own (a hard link) or the same
    # key (then delete() is called only once no row points at the key any more).
    links_share_key = False

    def save_upload(self, key: str, temporary_path: str, size: int) -> None:
        """Makes a complete upload (a local temporary file, already hashed) the object `key`.
        The object is visible only once complete; the temporary file may be consumed."""
        raise NotImplementedError

    def save_stream(self, key: str, source: BinaryIO, what: str) -> None:
        """Copies a readable stream (an execution's output) to `key`, visible only when complete."""
        raise NotImplementedError

    def save_link(self, existing: str, key: str, what: str) -> str:
        """Another name for stored bytes; returns the key the new row points at."""
        raise NotImplementedError

    def open(self, key: str) -> BinaryIO:
        """A readable stream of the object; FileNotFoundError when it is gone."""
        raise NotImplementedError

    def copy_to(self, key: str, target: Path) -> None:
        """Streams the object into a new local file `target` (an input in a work area)."""
        with self.open(key) as source, open(target, "xb") as out:
            shutil.copyfileobj(source, out, BLOCK)

    def delete(self, key: str) -> None:
        """Removes the object; a missing one is not an error."""
        raise NotImplementedError

    def delete_prefix(self, prefix: str) -> None:
        """Removes every object under `prefix` (a session: `{userId}/{sessionId}/`)."""
        raise NotImplementedError

    def health(self) -> dict:
        return {"ok": True, "store": self.name}


def _private_file(path: Path):
    """A new file only the server's user can read (0600, whatever the umask)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


class LocalStore(FileStore):
    """Files on the local volume under SANDBOX_STORAGE_PATH."""

    name = "local"

    def __init__(self, root: Path):
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / key

    def _folder_for(self, key: str) -> Path:
        target = self.path(key)
        with no_space_is("a folder"):
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return target

    def save_upload(self, key, temporary_path, size):
        # The temporary file lies on the same volume (FILE_UPLOAD_TEMP_DIR): a rename, atomic.
        os.rename(temporary_path, self._folder_for(key))

    def save_stream(self, key, source, what):
        target = self._folder_for(key)
        partial = target.with_name(f".{target.name}.partial")
        try:
            with no_space_is(what), _private_file(partial) as out:
                shutil.copyfileobj(source, out, BLOCK)
            os.rename(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def save_link(self, existing, key, what):
        target = self._folder_for(key)
        with no_space_is(what):
            os.link(self.path(existing), target)
        return key

    def open(self, key):
        return open(self.path(key), "rb")

    def copy_to(self, key, target):
        shutil.copyfile(self.path(key), target)  # sendfile: the kernel copies, no Python loop

    def delete(self, key):
        self.path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix):
        shutil.rmtree(self.path(prefix), ignore_errors=True)


# S3 error codes that mean "no room" rather than "not answering" (AWS has no quota error of its
# own; MinIO, Ceph RGW and SeaweedFS answer these when a bucket quota or the disks are full).
S3_FULL_CODES = {"InsufficientStorage", "QuotaExceeded", "XMinioStorageFull", "EntityTooLarge", "507"}


class S3Store(FileStore):
    """Objects in one bucket of an S3-compatible store (boto3)."""

    name = "s3"
    links_share_key = True

    def __init__(self):
        self.bucket = settings.SANDBOX_S3_BUCKET
        self.prefix = settings.SANDBOX_S3_PREFIX
        self.part = settings.SANDBOX_S3_PART_MB << 20
        self._local = threading.local()
        self._pid = None

    # -- the client: one per process (never carried across gunicorn's fork), shared by threads
    @property
    def client(self):
        if self._pid != os.getpid():
            import boto3
            from botocore.config import Config

            session = boto3.session.Session()
            self._client = session.client(
                "s3",
                endpoint_url=settings.SANDBOX_S3_ENDPOINT_URL or None,
                region_name=settings.SANDBOX_S3_REGION,
                aws_access_key_id=settings.SANDBOX_S3_ACCESS_KEY_ID or None,
                aws_secret_access_key=settings.SANDBOX_S3_SECRET_ACCESS_KEY or None,
                config=Config(
                    s3={"addressing_style": settings.SANDBOX_S3_ADDRESSING},
                    connect_timeout=settings.SANDBOX_S3_TIMEOUT_S,
                    read_timeout=settings.SANDBOX_S3_TIMEOUT_S,
                    # A store that restarts is retried a few times within one request, then 503.
                    retries={"max_attempts": 3, "mode": "standard"},
                    max_pool_connections=max(10, settings.SANDBOX_THREADS + 4),
                    # Checksums only when the operation requires them: several S3-compatible
                    # stores do not accept the trailing CRC headers newer SDKs send by default.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
            self._pid = os.getpid()
        return self._client

    def _transfer(self):
        from boto3.s3.transfer import TransferConfig

        # Multipart above one part; two parts in flight at most, so one upload holds at most
        # 2 x SANDBOX_S3_PART_MB in memory, whatever its size.
        return TransferConfig(multipart_threshold=self.part, multipart_chunksize=self.part, max_concurrency=2,
                              io_chunksize=256 * 1024)

    def object_key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    @contextmanager
    def _faults(self, what: str):
        """S3 and network errors -> the API's 507 or 503; a missing object -> FileNotFoundError."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(what) from None
            if code in S3_FULL_CODES or status == 507:
                raise StorageFull(what) from None
            raise StorageUnavailable(f"{code or status}: {error}") from None
        except S3UploadFailedError as error:
            text = str(error)
            if any(code in text for code in S3_FULL_CODES):
                raise StorageFull(what) from None
            raise StorageUnavailable(text) from None
        except BotoCoreError as error:
            raise StorageUnavailable(str(error)) from None

    def save_upload(self, key, temporary_path, size):
        with self._faults("the upload"):
            self.client.upload_file(temporary_path, self.bucket, self.object_key(key), Config=self._transfer())

    def save_stream(self, key, source, what):
        with self._faults(what):
            self.client.upload_fileobj(source, self.bucket, self.object_key(key), Config=self._transfer())

    def save_link(self, existing, key, what):
        return existing  # the same object; see links_share_key

    def open(self, key):
        with self._faults(key):
            body = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))["Body"]
        return _Stream(body, self._faults)

    def delete(self, key):
        with self._faults(key):
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def delete_prefix(self, prefix):
        with self._faults(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.object_key(prefix))
            for page in pages:
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})

    def health(self):
        try:
            with self._faults("the bucket"):
                self.client.head_bucket(Bucket=self.bucket)
            return {"ok": True, "store": "s3", "bucket": self.bucket}
        except (ApiError, FileNotFoundError) as error:
            return {"ok": False, "store": "s3", "bucket": self.bucket, "error": str(getattr(error, "body", error))[:200]}


class _Stream:
    """A get_object body that reads in blocks and turns a store that breaks off mid-read into
    StorageUnavailable (Django's FileResponse iterates read(), then calls close())."""

    def __init__(self, body, faults):
        self.body = body
        self.faults = faults

    def read(self, size: int = BLOCK) -> bytes:
        with self.faults("a download"):
            return self.body.read(size if size and size > 0 else BLOCK)

    def close(self) -> None:
        self.body.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_store: FileStore | None = None


def current() -> FileStore:
    """The configured store (made on first use, once per process)."""
    global _store
    if _store is None:
        _store = S3Store() if settings.SANDBOX_STORAGE_BACKEND == "s3" else LocalStore(settings.SANDBOX_STORAGE_PATH)
    return _store
