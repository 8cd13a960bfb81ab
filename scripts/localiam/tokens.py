"""RDS IAM tokens checked the way RDS checks them: a SigV4 presigned `rds-db:connect` URL.

A token is `<host>:<port>/?Action=connect&DBUser=<user>&X-Amz-Algorithm=AWS4-HMAC-SHA256
&X-Amz-Credential=<key id>/<yyyymmdd>/<region>/rds-db/aws4_request&X-Amz-Date=<yyyymmddThhmmssZ>
&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=<hex>` (botocore's
`generate_db_auth_token`). The signature is recomputed here from the SigV4 specification
("Create a signed AWS API request", query-string authentication), not with botocore's
signer, so an accepted token proves botocore and the specification agree.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import os
import secrets
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

# RDS: "The authentication token has a lifetime of 15 minutes."
TOKEN_LIFETIME = 15 * 60
# How far ahead of this endpoint's clock a token's X-Amz-Date may be. AWS does not
# document RDS's allowance; 5 minutes is SigV4's usual one for signed requests.
CLOCK_SKEW = 5 * 60
SERVICE = "rds-db"
ALGORITHM = "AWS4-HMAC-SHA256"
# The hash of the empty body: botocore moves the operation's parameters into the
# query string and signs the now empty payload over https.
EMPTY_PAYLOAD = hashlib.sha256(b"").hexdigest()
_REQUIRED = (
    "Action",
    "DBUser",
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)
_KEY_ALPHABET = string.ascii_uppercase + "234567"
# What else could make boto3 sign with other credentials than an IamKey's env(), or
# call AWS for some: a process given that env() should not inherit any of these.
OTHER_AWS_CREDENTIALS = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
)


class TokenRefused(Exception):
    """The password is not a valid token for this login; the message says why, never the token."""


@dataclass(frozen=True)
class IamKey:
    """An access key this endpoint knows, as IAM would: its secret, and what it may connect as.

    `session_token` is set for temporary credentials (an ECS task role's, an
    assumed role's): their tokens carry it as X-Amz-Security-Token. `db_users`
    stands in for the policy's `rds-db:connect` resources (`dbuser:<id>/<user>`);
    None allows every user.
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    db_users: frozenset[str] | None = None

    @classmethod
    def generate(cls, *, db_users: frozenset[str] | None = None, temporary: bool = False) -> IamKey:
        """A new random key pair, local to this run; no AWS account has it."""
        return cls(
            access_key_id="AKIALOCAL" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(11)),
            secret_access_key=secrets.token_urlsafe(30),
            session_token=secrets.token_urlsafe(48) if temporary else None,
            db_users=db_users,
        )

    def env(self) -> dict[str, str]:
        """AWS_* variables that make boto3 sign with this key and read nothing else: no
        ~/.aws, no instance metadata (unset OTHER_AWS_CREDENTIALS as well)."""
        env = {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        if self.session_token is not None:
            env["AWS_SESSION_TOKEN"] = self.session_token
        return env


@dataclass(frozen=True)
class Endpoint:
    """What a token must be signed for: this endpoint's host name, port and region."""

    host: str
    port: int
    region: str

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def masked(access_key_id: str) -> str:
    """A key id as logs show it: enough to tell keys apart, not the whole id."""
    return f"{access_key_id[:4]}...{access_key_id[-4:]}" if len(access_key_id) > 8 else "****"


def verify_token(
    token: str,
    *,
    user: str,
    endpoint: Endpoint,
    keys: Mapping[str, IamKey],
    now: float | None = None,
    skew: float = CLOCK_SKEW,
    lifetime: float = TOKEN_LIFETIME,
) -> IamKey:
    """Return the key that signed `token` for `user` at `endpoint`, or raise TokenRefused.

    Checked in this order, so that the reason names the first thing a developer
    got wrong: shape, user, endpoint, region, key, signature, then time
    (X-Amz-Date at most `skew` ahead of `now`, `now` within the token's
    X-Amz-Expires, never more than `lifetime`, of X-Amz-Date) and last the
    key's allowed users.
    """
    now = time.time() if now is None else now
    netloc, params = _parse(token)
    host, port = netloc
    if params["Action"] != "connect":
        raise TokenRefused(f"token is for Action={params['Action']}, not connect")
    if params["DBUser"] != user:
        raise TokenRefused(f"token is for DBUser {params['DBUser']}; the login is for {user}")
    if (host.lower(), port) != (endpoint.host.lower(), endpoint.port):
        raise TokenRefused(f"token signed for host {host}:{port}; this endpoint is {endpoint}")
    if params["X-Amz-Algorithm"] != ALGORITHM or params["X-Amz-SignedHeaders"] != "host":
        raise TokenRefused("token is not a SigV4 presigned URL signing only the host header")
    scope = params["X-Amz-Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise TokenRefused("token's X-Amz-Credential is not <key>/<date>/<region>/<service>/...")
    key_id, scope_date, region, service, _ = scope
    if region != endpoint.region:
        raise TokenRefused(
            f"token signed for region {region}; this endpoint is in {endpoint.region}"
        )
    if service != SERVICE:
        raise TokenRefused(f"token signed for service {service}, not {SERVICE}")
    key = keys.get(key_id)
    if key is None:
        raise TokenRefused(f"token signed with access key {masked(key_id)}, unknown here")
    if params.get("X-Amz-Security-Token") != key.session_token:
        raise TokenRefused(f"token's session token is not the one of access key {masked(key_id)}")
    expected = signature(params, host=host, port=port, key=key, region=region)
    if not hmac.compare_digest(expected, params["X-Amz-Signature"]):
        raise TokenRefused(
            f"signature does not match: signed with another secret for access key "
            f"{masked(key_id)}, or altered"
        )
    _check_time(params, scope_date, now=now, skew=skew, lifetime=lifetime)
    if key.db_users is not None and user not in key.db_users:
        raise TokenRefused(f"access key {masked(key_id)} may not rds-db:connect as {user}")
    return key


def signature(params: Mapping[str, str], *, host: str, port: int, key: IamKey, region: str) -> str:
    """SigV4 query-string signature of a GET / with these parameters, for `host:port`."""
    canonical_query = "&".join(
        sorted(
            f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}"
            for name, value in params.items()
            if name != "X-Amz-Signature"
        )
    )
    # The Host header as an https client sends it: lower case, no port when 443.
    host_header = host.lower() if port == 443 else f"{host.lower()}:{port}"
    canonical_request = "\n".join(
        ["GET", "/", canonical_query, f"host:{host_header}", "", "host", EMPTY_PAYLOAD]
    )
    amz_date = params["X-Amz-Date"]
    scope = f"{amz_date[:8]}/{region}/{SERVICE}/aws4_request"
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    signing_key = ("AWS4" + key.secret_access_key).encode()
    for part in (amz_date[:8], region, SERVICE, "aws4_request"):
        signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
    return hmac.new(signing_key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def _parse(token: str) -> tuple[tuple[str, int], dict[str, str]]:
    netloc, marker, query = token.partition("/?")
    host, colon, port_text = netloc.rpartition(":")
    if not (marker and colon and host and port_text.isdigit()):
        raise TokenRefused(
            "the password is not an RDS IAM token (<host>:<port>/?Action=connect&...)"
        )
    params: dict[str, str] = {}
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        name, value = unquote(name), unquote(value)
        if name in params:
            raise TokenRefused(f"token has {name} twice")
        params[name] = value
    missing = [name for name in _REQUIRED if name not in params]
    if missing:
        raise TokenRefused(f"token lacks {', '.join(missing)}")
    return (host, int(port_text)), params


def _check_time(
    params: Mapping[str, str], scope_date: str, *, now: float, skew: float, lifetime: float
) -> None:
    amz_date = params["X-Amz-Date"]
    try:
        signed_at = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
        expires = int(params["X-Amz-Expires"])
    except ValueError:
        raise TokenRefused("token's X-Amz-Date or X-Amz-Expires is malformed") from None
    if scope_date != amz_date[:8]:
        raise TokenRefused("token's credential date is not its X-Amz-Date's")
    if expires <= 0:
        raise TokenRefused("token's X-Amz-Expires is not positive")
    shown = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(signed_at))
    ahead = signed_at - now
    if ahead > skew:
        raise TokenRefused(
            f"token signed at {shown}, {ahead:.0f} s ahead of this endpoint's clock "
            f"(allowed: {skew:.0f} s): check the signer's clock"
        )
    valid = min(expires, lifetime)
    if now > signed_at + valid:
        raise TokenRefused(
            f"token expired: signed at {shown}, valid {valid:.0f} s, "
            f"{now - signed_at - valid:.0f} s ago"
        )
