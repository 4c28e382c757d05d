"""Multipart parsing that keeps the client's file name as sent.

Django's parser reduces every file name to its basename and silently drops unprintable
characters. The Code API needs relative paths (`dir/file.csv`, spec §E2) and must refuse bad
names (`..`, NUL, backslashes) with a 400 instead of quietly renaming them, so the raw name is
kept here and checked by storage.names.
"""

from django.conf import settings
from django.http.multipartparser import MultiPartParser as DjangoMultiPartParser
from django.http.multipartparser import MultiPartParserError
from rest_framework.exceptions import ParseError
from rest_framework.parsers import DataAndFiles, MultiPartParser

from .uploads import drain


class RawNameMultiPartParser(DjangoMultiPartParser):
    def sanitize_file_name(self, file_name):
        return file_name or None


class CodeApiMultiPartParser(MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):
        request = parser_context["request"]
        meta = request.META.copy()
        meta["CONTENT_TYPE"] = media_type
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            parser = RawNameMultiPartParser(meta, stream, request.upload_handlers, encoding)
            data, files = parser.parse()
        except MultiPartParserError as error:
            drain(stream)
            raise ParseError(f"Malformed multipart body: {error}") from None
        return DataAndFiles(data, files)
