"""Where database passwords come from: RDS IAM tokens, Secrets Manager, or a static value.

Every provider caches what it fetched and can be told that the server refused
it (`invalidate`), so the next `get` fetches fresh. All are thread-safe: a pool
opens connections from many threads at once, and only one of them should mint.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

# botocore, not boto3: boto3 adds nothing these two calls need, and its import (with
# s3transfer) costs a Lambda cold start ~15 ms more (docs/lambda.md, "Cold start").
import botocore.session
from botocore.model import ServiceId
from botocore.signers import RequestSigner, generate_db_auth_token

from . import metrics

if TYPE_CHECKING:
    from mypy_boto3_rds import RDSClient
    from mypy_boto3_secretsmanager import SecretsManagerClient

    from .settings import Settings

Clock = Callable[[], float]

# RDS IAM tokens are valid for 15 minutes. Reuse one until a minute before it
# expires: RDS throttles new IAM logins, and a token only matters at login.
IAM_TOKEN_LIFETIME = 15 * 60
IAM_TOKEN_REFRESH_MARGIN = 60


@dataclass(frozen=True)
class Credential:
    """A user name and password for one login attempt."""

    user: str
    password: str = field(repr=False)
    # True when the value came from the provider's cache rather than its source,
    # so a refused login is worth one retry with a fresh value.
    cached: bool = False


class CredentialProvider(Protocol):
    """The seam between the engine's connect hook and wherever passwords live."""

    def get(self) -> Credential:
        """Return a credential, cached when still valid."""
        ...

    def invalidate(self) -> None:
        """Forget the cached credential: the server refused it."""
        ...

    def reset(self) -> None:
        """Forget the cached credential and whatever fetched it (a restored snapshot)."""
        ...

    @property
    def rotates(self) -> bool:
        """True when a refused fresh value may be accepted soon (a rotation in progress)."""
        ...


class StaticPasswordProvider:
    """A fixed user and password, for local development and tests."""

    def __init__(self, user: str, password: str) -> None:
        self._credential = Credential(user, password)

    def get(self) -> Credential:
        return self._credential

    def invalidate(self) -> None:
        """Nothing to refresh: a static password is what it is."""

    def reset(self) -> None:
        """Nothing cached but the password itself."""

    rotates = False


class RdsTokenSigner:
    """Signs RDS IAM tokens as an RDS client's `generate_db_auth_token` does, without the client.

    That method only presigns a URL with the client's request signer. Building a client
    loads the RDS API model (190 KB of gzipped JSON) for nothing else: 45 ms of a cold
    start. So this holds the same signer (same credentials chain, same SigV4 signing)
    and lends itself to botocore's own function.
    """

    def __init__(self, session: botocore.session.Session, region: str) -> None:
        self._session = session  # owns the event emitter the signer holds weakly
        self._request_signer = RequestSigner(
            ServiceId("RDS"),
            region,
            "rds",
            "v4",
            # None without credentials: then signing raises NoCredentialsError, as the
            # client's signer does.
            session.get_credentials(),  # type: ignore[arg-type]
            session.get_component("event_emitter"),
        )

    def generate_db_auth_token(
        self, DBHostname: str, Port: int, DBUsername: str, Region: str | None = None
    ) -> str:
        token: str = generate_db_auth_token(
            self, DBHostname=DBHostname, Port=Port, DBUsername=DBUsername, Region=Region
        )
        return token


class IamTokenProvider:
    """RDS IAM authentication tokens, minted with botocore and reused until near expiry.

    A token dies at the earlier of 15 minutes after signing and the expiry of the
    temporary AWS credentials that signed it (an ECS task role's, an assumed
    role's): a presigned request is only as valid as its signer. So a token is
    reused until a minute before the earlier of the two.
    """

    rotates = False

    def __init__(
        self,
        *,
        host: str,
        port: int,
        user: str,
        region: str,
        client: RDSClient | RdsTokenSigner | None = None,
        credential_expiry: Callable[[], float | None] | None = None,
        clock: Clock = time.time,
        lifetime: float = IAM_TOKEN_LIFETIME,
    ) -> None:
        self.host, self.port, self.user, self.region = host, port, user, region
        self._client = client
        self._session: botocore.session.Session | None = None
        self._credential_expiry = credential_expiry or self._session_credential_expiry
        self._clock = clock
        self._lifetime = lifetime
        self._lock = threading.Lock()
        self._token: str | None = None
        self._reuse_until = 0.0
        self.minted = 0  # tokens minted so far; tests and benchmarks read it

    def get(self) -> Credential:
        with self._lock:
            now = self._clock()
            if self._token is not None and now < self._reuse_until:
                return Credential(self.user, self._token, cached=True)
            client = self._rds()
            signer_expiry = self._credential_expiry()
            self._token = client.generate_db_auth_token(
                DBHostname=self.host, Port=self.port, DBUsername=self.user, Region=self.region
            )
            expires = now + self._lifetime
            if signer_expiry is not None:
                expires = min(expires, signer_expiry)
            self._reuse_until = expires - IAM_TOKEN_REFRESH_MARGIN
            self.minted += 1
            metrics.token_minted()
            return Credential(self.user, self._token)

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def reset(self) -> None:
        """Forget the token and the AWS session that signed it (a SnapStart restore: the
        snapshot's credentials and token must not sign or log in a restored copy)."""
        with self._lock:
            self._token = None
            self._reuse_until = 0.0
            if self._session is not None:  # ours, not a client the caller passed
                self._client = self._session = None

    def _rds(self) -> RDSClient | RdsTokenSigner:
        # Created lazily: a Lambda that never connects resolves no AWS credentials.
        if self._client is None:
            self._session = _aws_session(self.region)
            self._client = RdsTokenSigner(self._session, self.region)
        return self._client

    def _session_credential_expiry(self) -> float | None:
        """When the credentials signing our tokens expire (epoch seconds), if they do.

        botocore's refreshable credentials (container, instance, assumed-role and
        SSO providers) refresh themselves when read and keep their expiry in
        `_expiry_time`, which has no public accessor. Static keys, and Lambda's
        environment credentials, carry none: the token's 15 minutes bound it.
        """
        session = self._session or _aws_session(self.region)
        credentials = session.get_credentials()
        if credentials is None:
            return None
        credentials.get_frozen_credentials()  # refreshes when near expiry
        expiry = getattr(credentials, "_expiry_time", None)
        return expiry.timestamp() if expiry is not None else None


def _aws_session(region: str) -> botocore.session.Session:
    """A botocore session in `region`, as `boto3.session.Session(region_name=region)` makes one
    (the region matters to credential providers that call STS, e.g. an assumed role)."""
    session = botocore.session.get_session()
    session.set_config_variable("region", region)
    return session


class SecretsManagerProvider:
    """A JSON secret ({"username", "password", ...}) from Secrets Manager, cached with a TTL."""

    # During a rotation the server takes the new password before the secret's
    # AWSCURRENT version names it: a refused fresh value is worth re-reading.
    rotates = True

    def __init__(
        self,
        *,
        secret_id: str,
        region: str | None,
        client: SecretsManagerClient | None = None,
        ttl: float = 300,
        clock: Clock = time.monotonic,
    ) -> None:
        self.secret_id, self.region = secret_id, region
        self._client = client
        self._own_client = client is None
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._secret: dict[str, Any] | None = None
        self._fetched_at = 0.0
        self.fetches = 0

    def get(self) -> Credential:
        with self._lock:
            cached = self._secret is not None and self._clock() - self._fetched_at < self._ttl
            if not cached:
                self._secret = self._fetch()
                self._fetched_at = self._clock()
            assert self._secret is not None
            return Credential(self._secret["username"], self._secret["password"], cached=cached)

    def invalidate(self) -> None:
        with self._lock:
            self._secret = None

    def reset(self) -> None:
        """Forget the secret and the client that read it (a SnapStart restore)."""
        with self._lock:
            self._secret = None
            if self._own_client:
                self._client = None

    def _fetch(self) -> dict[str, Any]:
        if self._client is None:
            self._client = cast(
                "SecretsManagerClient",
                botocore.session.get_session().create_client(
                    "secretsmanager", region_name=self.region
                ),
            )
        response = self._client.get_secret_value(SecretId=self.secret_id)
        self.fetches += 1
        metrics.secret_read()
        try:
            secret = json.loads(response["SecretString"])
            if not (
                isinstance(secret, dict)
                and isinstance(secret.get("username"), str)
                and isinstance(secret.get("password"), str)
            ):
                raise ValueError
        except (KeyError, ValueError):
            # Say what is wrong with the secret's shape, never what is in it.
            raise ValueError(
                f"secret {self.secret_id} must be a JSON object with string "
                f"'username' and 'password'"
            ) from None
        return dict(secret)


def provider_for(settings: Settings, host: str) -> CredentialProvider:
    """Build the provider that settings.auth names, for connections to `host`.

    IAM tokens are signed for `host`, except that the writer's are signed for
    DB_IAM_HOST when it is set (a tunnel or proxy in front of the writer); a
    reader always signs for its own endpoint.
    """
    if settings.auth == "password":
        assert settings.user is not None
        assert settings.password is not None
        return StaticPasswordProvider(settings.user, settings.password)
    if settings.auth == "secret":
        assert settings.secret_id is not None
        return SecretsManagerProvider(
            secret_id=settings.secret_id, region=settings.region, ttl=settings.secret_ttl
        )
    assert settings.user is not None
    assert settings.region is not None
    sign_host = settings.iam_host if settings.iam_host and host == settings.host else host
    return IamTokenProvider(
        host=sign_host,
        port=settings.port,
        user=settings.user,
        region=settings.region,
    )
