"""The multipart upload handler: streams each file part to a temporary file on the storage
volume while hashing it, and stops the request as soon as it grows past the size limit."""

from __future__ import annotations

import hashlib
import os

from django.conf import settings
from django.core.files.uploadhandler import TemporaryFileUploadHandler

from sandbox_project.errors import ApiError

from .store import NO_SPACE, StorageFull


def drain(stream) -> None:
    """Reads the rest of a body the server refuses part-way (too large, malformed, no room)
    before it answers: a client, or the nginx front, still writing it would otherwise see its
    connection cut, not the answer (nginx turns that into a 502). Bounded: the stream ends at
    the declared length, which handle_raw_input and the front cap (limit + 1 MiB)."""
    while stream is not None and stream.read(1 << 16):
        pass


class UploadTooLarge(ApiError):
    def __init__(self, limit_mb: int):
        super().__init__(413, "payload_too_large", f"File size limit exceeded: uploads are limited to {limit_mb} MiB per request")


class CappedUploadHandler(TemporaryFileUploadHandler):
    def __init__(self, request=None):
        super().__init__(request)
        self.limit = settings.SANDBOX_MAX_UPLOAD_MB << 20
        self.received = 0
        self._hash = None

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        # Refuse before reading a byte when the client says up front that it is too big.
        if content_length and content_length > self.limit + (1 << 20):
            raise UploadTooLarge(settings.SANDBOX_MAX_UPLOAD_MB)
        os.makedirs(settings.FILE_UPLOAD_TEMP_DIR, mode=0o700, exist_ok=True)
        return None

    def new_file(self, field_name, file_name, *args, **kwargs):
        try:
            super().new_file(field_name, file_name, *args, **kwargs)
        except OSError as error:
            self._no_space(error)
        self._raw_name = file_name  # UploadedFile.name keeps only the basename
        self._hash = hashlib.sha256()

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self.limit:
            self.file.close()  # deletes the partial temporary file
            self._drain()
            raise UploadTooLarge(settings.SANDBOX_MAX_UPLOAD_MB)
        self._hash.update(raw_data)
        try:
            return super().receive_data_chunk(raw_data, start)
        except OSError as error:
            self._no_space(error)

    def _drain(self):
        drain(getattr(self.request, "_stream", None))

    def _no_space(self, error: OSError):
        """A full volume: the partial temporary file goes now, and the client gets a 507."""
        if getattr(self, "file", None) is not None:
            self.file.close()
        self._drain()
        if error.errno in NO_SPACE:
            raise StorageFull("the upload") from None
        raise error

    def file_complete(self, file_size):
        uploaded = super().file_complete(file_size)
        uploaded.sha256 = self._hash.hexdigest()
        uploaded.client_name = self._raw_name
        return uploaded
