"""Bearer JWT authentication (OAuth 2.0 / OIDC access tokens) and authorisation.

Every endpoint but health, readiness and the API's own description needs a valid
access token from the configured issuer: signature (a key from the issuer's
JWKS), issuer, audience (`aud`, or Cognito's `client_id`), expiry within a
bounded clock skew. Authorisation is by scope and ownership: the admin scope
manages the catalog and may act for any customer; a token whose claim names a
customer acts for that customer only.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from flask import Flask, current_app, g, request

from dataaccess import SettingsError

# Endpoints anyone may call: liveness, readiness, and the API's description (the
# document, and the page that shows it: api/docs.py).
PUBLIC_ENDPOINTS = frozenset(
    {
        "health.healthz",
        "health.readyz",
        "openapi.openapi_document",
        "docs.root",
        "docs.page",
        "docs.init",
        "docs.asset",
    }
)
ALGORITHMS = ["RS256", "ES256"]
# An unknown key id refreshes the JWKS at most this often: a forged `kid` per request
# must not turn the API into a flood of requests to the issuer.
JWKS_REFRESH_FLOOR = 60.0
# A verified token's principal is kept this long (never past the token's expiry), for
# this many tokens per worker: a client sends the same token with every request, and
# verifying it again (PyJWT's base64 checks and the RSA signature) costs about 230 µs,
# the API's largest cost per request after the database (bench/RESULTS.md, B5). A key
# withdrawn from the JWKS stops being trusted within this time.
VERIFIED_TOKEN_SECONDS = 60.0
VERIFIED_TOKENS = 1024


class UnauthenticatedError(Exception):
    """No usable bearer token (401); the message says why, never what the token held."""


class ForbiddenError(Exception):
    """A valid token that does not allow this request (403)."""


class AuthUnavailableError(Exception):
    """The issuer's keys could not be fetched (503): not the caller's fault."""


@dataclass(frozen=True)
class AuthSettings:
    """AUTH_* variables, read once; every error names its variable."""

    issuer: str
    audiences: tuple[str, ...]
    jwks_url: str | None = None
    jwks_file: str | None = None
    admin_scope: str = "inventory/admin"
    customer_claim: str = "customer_id"
    leeway: int = 30

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AuthSettings:
        env = {k: v.strip() for k, v in (os.environ if environ is None else environ).items()}
        missing = [name for name in ("AUTH_ISSUER", "AUTH_AUDIENCE") if not env.get(name)]
        if missing:
            raise SettingsError(f"{missing[0]} is required: the API accepts no anonymous calls")
        url, path = env.get("AUTH_JWKS_URL") or None, env.get("AUTH_JWKS_FILE") or None
        if (url is None) == (path is None):
            raise SettingsError("AUTH_JWKS_URL is required (or AUTH_JWKS_FILE, for a local issuer)")
        if url is not None and not url.startswith("https://"):
            raise SettingsError(f"AUTH_JWKS_URL must be an https:// URL; got {url!r}")
        if path is not None and not Path(path).is_file():
            raise SettingsError(f"AUTH_JWKS_FILE names a file that does not exist: {path}")
        if not [a for a in env["AUTH_AUDIENCE"].split(",") if a.strip()]:
            raise SettingsError("AUTH_AUDIENCE must name at least one audience")
        leeway = env.get("AUTH_LEEWAY_SECONDS") or "30"
        if not leeway.isdigit() or int(leeway) > 300:
            raise SettingsError(f"AUTH_LEEWAY_SECONDS must be between 0 and 300; got {leeway!r}")
        return cls(
            issuer=env["AUTH_ISSUER"],
            audiences=tuple(a.strip() for a in env["AUTH_AUDIENCE"].split(",") if a.strip()),
            jwks_url=url,
            jwks_file=path,
            admin_scope=env.get("AUTH_ADMIN_SCOPE") or "inventory/admin",
            customer_claim=env.get("AUTH_CUSTOMER_CLAIM") or "customer_id",
            leeway=int(leeway),
        )


@dataclass(frozen=True)
class Principal:
    """Who a valid token speaks for."""

    subject: str
    admin: bool
    customer_id: int | None

    def may_act_for(self, customer_id: int) -> bool:
        return self.admin or self.customer_id == customer_id


class Authenticator:
    """Verifies access tokens against the issuer's keys (fetched and cached by PyJWT).

    The principal of a verified token is remembered by the token's exact text until
    the token expires or VERIFIED_TOKEN_SECONDS pass, whichever comes first; only
    tokens that verified are remembered, so a refused one is checked again each time.
    """

    def __init__(
        self,
        settings: AuthSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        verified_tokens: int = VERIFIED_TOKENS,
    ):
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._verified: dict[str, tuple[float, Principal]] = {}  # token: (deadline, principal)
        self._verified_max = verified_tokens
        self._refreshed_at = -JWKS_REFRESH_FLOOR
        self._client: jwt.PyJWKClient | None = None
        self._static: dict[str, Any] = {}
        if settings.jwks_file is not None:
            keys = jwt.PyJWKSet.from_json(Path(settings.jwks_file).read_text())
            self._static = {key.key_id: key.key for key in keys.keys}
        else:
            assert settings.jwks_url is not None
            self._client = jwt.PyJWKClient(settings.jwks_url, lifespan=300, timeout=5)

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an `Authorization: Bearer <token>` header, or UnauthenticatedError."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise UnauthenticatedError("a bearer token is required")
        known = self._verified.get(token)
        if known is not None and self._clock() < known[0]:
            return known[1]
        claims = self._verify(token)
        who = self._principal(claims)
        self._remember(token, claims, who)
        return who

    def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key(header.get("kid")),
                algorithms=ALGORITHMS,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway,
                options={"require": ["exp", "iss", "sub"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise UnauthenticatedError("the token has expired") from None
        except jwt.InvalidIssuerError:
            raise UnauthenticatedError("the token is from another issuer") from None
        except jwt.InvalidSignatureError:
            raise UnauthenticatedError("the token's signature does not verify") from None
        except jwt.PyJWKClientConnectionError:
            raise AuthUnavailableError("the issuer's keys could not be fetched") from None
        except jwt.PyJWTError:
            raise UnauthenticatedError("the token is malformed or incomplete") from None
        return claims

    def _remember(self, token: str, claims: dict[str, Any], who: Principal) -> None:
        # `exp` is required and was just checked; PyJWT accepts it up to `leeway` late.
        lifetime = float(claims["exp"]) + self.settings.leeway - time.time()
        deadline = self._clock() + min(lifetime, VERIFIED_TOKEN_SECONDS)
        with self._lock:
            if len(self._verified) >= self._verified_max:
                now = self._clock()
                for stale in [t for t, (until, _) in self._verified.items() if until <= now]:
                    del self._verified[stale]
                while len(self._verified) >= self._verified_max:
                    del self._verified[next(iter(self._verified))]  # the oldest
            self._verified[token] = (deadline, who)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        if not isinstance(claims.get("sub"), str) or not claims["sub"].strip():
            raise UnauthenticatedError("the token is malformed or incomplete")
        audiences = claims.get("aud") or []
        audiences = [audiences] if isinstance(audiences, str) else list(audiences)
        # Cognito access tokens carry the app client in `client_id`, not `aud`.
        if not set(self.settings.audiences) & {*audiences, claims.get("client_id")}:
            raise UnauthenticatedError("the token is not for this API")
        scopes = set(str(claims.get("scope", "")).split())
        customer = claims.get(self.settings.customer_claim)
        if isinstance(customer, str) and customer.isdigit():
            customer = int(customer)
        if not isinstance(customer, int) or isinstance(customer, bool) or customer < 1:
            customer = None
        admin = self.settings.admin_scope in scopes
        if not admin and customer is None:
            raise ForbiddenError("the token grants neither the admin scope nor a customer")
        return Principal(subject=str(claims["sub"]), admin=admin, customer_id=customer)

    def _key(self, kid: Any) -> Any:
        if self._client is None:
            if kid not in self._static:
                raise jwt.InvalidSignatureError("unknown key id")
            return self._static[kid]
        keys = {key.key_id: key.key for key in self._client.get_signing_keys()}
        if kid not in keys:
            with self._lock:
                if self._clock() - self._refreshed_at < JWKS_REFRESH_FLOOR:
                    raise jwt.InvalidSignatureError("unknown key id")
                self._refreshed_at = self._clock()
            keys = {key.key_id: key.key for key in self._client.get_signing_keys(refresh=True)}
            if kid not in keys:
                raise jwt.InvalidSignatureError("unknown key id")
        return keys[kid]


def principal() -> Principal:
    """This request's principal (set before the view ran)."""
    found: Principal = g.principal
    return found


def require_admin() -> Principal:
    """The principal, when it holds the admin scope; else ForbiddenError."""
    who = principal()
    if not who.admin:
        raise ForbiddenError("this needs the admin scope")
    return who


def require_customer(customer_id: int) -> Principal:
    """The principal, when it may act for `customer_id`; else ForbiddenError."""
    who = principal()
    if not who.may_act_for(customer_id):
        raise ForbiddenError("this token acts for another customer")
    return who


def _authenticate() -> None:
    # No matching route (a 404 to come) needs no token; every other endpoint does.
    if request.endpoint is None or request.endpoint in PUBLIC_ENDPOINTS:
        return
    authenticator: Authenticator = current_app.extensions["authenticator"]
    g.principal = authenticator.authenticate(request.headers.get("Authorization"))


def init_app(app: Flask, authenticator: Authenticator) -> None:
    app.extensions["authenticator"] = authenticator
    app.before_request(_authenticate)
