"""Every non-2xx answer is a small JSON body: {"error": ..., "message": ...}."""

from __future__ import annotations

import logging

from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

log = logging.getLogger("sandbox.errors")


class ApiError(Exception):
    """An error with the status and body the client should see."""

    def __init__(self, status_code: int, error: str, message: str | None = None, headers=None, **extra):
        super().__init__(message or error)
        self.status_code = status_code
        self.body = {"error": error, **({"message": message} if message else {}), **extra}
        self.headers = headers or {}


def bad_request(message: str, error: str = "bad_request") -> ApiError:
    return ApiError(400, error, message)


def not_found(message: str = "The file may have expired or does not exist", error: str = "File not found") -> ApiError:
    return ApiError(404, error, message)


_DRF_ERRORS = {
    exceptions.ParseError: "bad_request",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.NotAuthenticated: "unauthorized",
    exceptions.AuthenticationFailed: "unauthorized",
    exceptions.PermissionDenied: "forbidden",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotFound: "not_found",
}


def json_exception_handler(exc, context):
    if isinstance(exc, ApiError):
        return Response(exc.body, status=exc.status_code, headers=exc.headers)
    if isinstance(exc, RequestDataTooBig):
        return Response({"error": "payload_too_large", "message": str(exc)}, status=413)
    if isinstance(exc, exceptions.APIException):
        code = _DRF_ERRORS.get(type(exc), "error")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        status_code = exc.status_code
        if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
            status_code = status.HTTP_401_UNAUTHORIZED
        return Response({"error": code, "message": detail}, status=status_code)
    from django.db import DatabaseError

    if isinstance(exc, DatabaseError):
        # The database is down, restarting or full: transient for the client, with a reason.
        text = str(exc).lower()
        if "disk is full" in text or "no space left" in text:
            log.error("the database's disk is full", extra={"error": str(exc)[:300]})
            return Response({"error": "insufficient_storage", "message": "The server's database has no room left"}, status=507)
        log.error("database unavailable", extra={"error": str(exc)[:300]})
        return Response({"error": "database_unavailable", "message": "The server's database is not answering; retry shortly"},
                        status=503, headers={"Retry-After": "2"})
    log.exception("unhandled error", extra={"view": type(context.get("view")).__name__})
    return Response({"error": "Internal server error"}, status=500)


def json_404(request, exception=None):
    return JsonResponse({"error": "not_found", "message": f"No route for {request.method} {request.path}"}, status=404)


def json_500(request):
    return JsonResponse({"error": "Internal server error"}, status=500)


def json_400(request, exception=None):
    return JsonResponse({"error": "bad_request", "message": str(exception or "Bad request")}, status=400)
