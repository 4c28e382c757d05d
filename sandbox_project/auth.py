"""Who may call the Code API, and who they are.

Accepted, in any combination (clients of different generations send different things, and a
request carrying two kinds of header is never rejected for it):
- `X-API-Key: <key>` or `Authorization: Bearer <key>` equal to SANDBOX_API_KEY
  (LIBRECHAT_CODE_API_KEY), compared in constant time;
- `Authorization: Bearer <JWT>` minted by LibreChat >= v0.8.6 (EdDSA or RS256, iss/aud/exp
  checked) when a public key or JWKS file is configured; its `sub` is the user id;
- nothing at all, only when SANDBOX_AUTH_OPEN=true.
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jwt
from django.conf import settings
from rest_framework import authentication, exceptions, permissions

from audit.events import record_auth_failure

log = logging.getLogger("sandbox.auth")
JWT_ALGORITHMS = ["EdDSA", "RS256"]


@dataclass(frozen=True)
class Caller:
    method: str  # "api_key" | "jwt" | "open"
    user_id: str | None = None
    is_authenticated: bool = True


@lru_cache(maxsize=1)
def _jwt_keys() -> tuple[dict, list]:
    """({kid: key}, [keys without kid]) from the configured PEM and/or JWKS file."""
    by_kid: dict = {}
    anonymous: list = []
    pem = settings.SANDBOX_JWT_PUBLIC_KEY
    if settings.SANDBOX_JWT_PUBLIC_KEY_FILE:
        pem = Path(settings.SANDBOX_JWT_PUBLIC_KEY_FILE).read_text()
    if pem:
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        anonymous.append(load_pem_public_key(pem.replace("\\n", "\n").encode()))
    if settings.SANDBOX_JWT_JWKS_FILE:
        jwks = jwt.PyJWKSet.from_json(Path(settings.SANDBOX_JWT_JWKS_FILE).read_text())
        for key in jwks.keys:
            if key.key_id:
                by_kid[key.key_id] = key.key
            else:
                anonymous.append(key.key)
    return by_kid, anonymous


def jwt_configured() -> bool:
    return bool(settings.SANDBOX_JWT_PUBLIC_KEY or settings.SANDBOX_JWT_PUBLIC_KEY_FILE or settings.SANDBOX_JWT_JWKS_FILE)


def _fits(algorithm: str, key) -> bool:
    """Whether `key` can verify `algorithm` at all. PyJWT raises TypeError (not a PyJWTError)
    when it is handed a key of another family, e.g. an RS256 token and an Ed25519 key."""
    from cryptography.hazmat.primitives.asymmetric import ed448, ed25519, rsa

    if algorithm == "EdDSA":
        return isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey))
    return algorithm == "RS256" and isinstance(key, rsa.RSAPublicKey)


def verify_jwt(token: str) -> str:
    """Returns the token's `sub`; raises jwt.InvalidTokenError when it is not acceptable."""
    by_kid, anonymous = _jwt_keys()
    header = jwt.get_unverified_header(token)
    algorithm, kid = header.get("alg"), header.get("kid")
    if algorithm not in JWT_ALGORITHMS:
        raise jwt.InvalidAlgorithmError(f"algorithm {str(algorithm)[:20]!r} is not accepted")
    candidates = [by_kid[kid]] if isinstance(kid, str) and kid in by_kid else [*anonymous, *by_kid.values()]
    candidates = [key for key in candidates if _fits(algorithm, key)]
    last_error: jwt.PyJWTError = jwt.InvalidTokenError(f"no configured key verifies {algorithm}")
    for key in candidates:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=JWT_ALGORITHMS,
                audience=settings.SANDBOX_JWT_AUDIENCE,
                issuer=settings.SANDBOX_JWT_ISSUER,
                options={"require": ["exp", "sub"]},
                leeway=5,
            )
        except jwt.PyJWTError as error:
            last_error = error
            continue
        subject = claims["sub"]
        # An empty subject would be no user at all, i.e. the rights of the shared key.
        if not isinstance(subject, str) or not subject.strip() or len(subject) > 255:
            raise jwt.InvalidTokenError("the token's sub must name a user (1-255 characters)")
        return subject
    raise last_error


def key_matches(presented: str) -> bool:
    expected = settings.SANDBOX_API_KEY
    return bool(expected) and hmac.compare_digest(presented.encode(), expected.encode())


def identify(api_key: str, bearer: str) -> Caller | None:
    """The caller, or None when the credentials (or their absence) are not acceptable."""
    for presented in (api_key, bearer):
        if presented and key_matches(presented):
            return Caller("api_key")
    if bearer and bearer.count(".") == 2 and jwt_configured():
        try:
            return Caller("jwt", verify_jwt(bearer))
        except (jwt.PyJWTError, ValueError, TypeError) as error:  # whatever a forged token makes PyJWT raise
            log.info("bearer token rejected", extra={"reason": str(error)[:200]})
    if settings.SANDBOX_AUTH_OPEN:
        return Caller("open")
    return None


class CodeApiAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        api_key = request.headers.get("X-API-Key", "").strip()
        header = request.headers.get("Authorization", "").strip()
        bearer = header[7:].strip() if header[:7].lower() == "bearer " else ""
        caller = identify(api_key, bearer)
        if caller is None:
            presented = "x-api-key" if api_key else ("bearer" if bearer else "none")
            record_auth_failure(request, presented)
            if not (settings.SANDBOX_API_KEY or jwt_configured()):
                raise exceptions.AuthenticationFailed("This server has no credential configured (set SANDBOX_API_KEY)")
            raise exceptions.AuthenticationFailed("Missing or invalid credentials")
        return caller, None

    def authenticate_header(self, request):
        return 'Bearer realm="codeapi"'


class IsCodeApiClient(permissions.BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.user, Caller)
