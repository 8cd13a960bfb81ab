"""A local token issuer for `make run`, the tests, the drills and the benchmarks.

It stands in for Cognito (or any OIDC issuer): an RSA key pair made once per
folder, its public half as a JWKS file the API loads (AUTH_JWKS_FILE), and
signed access tokens with the admin scope or a customer claim. The private key
is owner-only and never leaves the folder.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from scripts.localpg import write_private

ISSUER = "http://127.0.0.1/local-issuer"
AUDIENCE = "inventory-api"
ADMIN_SCOPE = "inventory/admin"


@dataclass
class LocalIssuer:
    """Keys in `root` (made on first use); `token(...)` signs an access token."""

    root: Path
    key_id: str = ""

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        private = self.root / "issuer.key"
        if not private.exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            write_private(private, pem.decode())
            public = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            public.update(kid=secrets.token_hex(8), use="sig", alg="RS256")
            self.jwks_file.write_text(json.dumps({"keys": [public]}))
        self._key = serialization.load_pem_private_key(private.read_bytes(), password=None)
        self.key_id = json.loads(self.jwks_file.read_text())["keys"][0]["kid"]

    @property
    def jwks_file(self) -> Path:
        return self.root / "jwks.json"

    def env(self) -> dict[str, str]:
        """The AUTH_* variables that make the API trust this issuer."""
        return {
            "AUTH_ISSUER": ISSUER,
            "AUTH_AUDIENCE": AUDIENCE,
            "AUTH_JWKS_FILE": str(self.jwks_file),
            "AUTH_ADMIN_SCOPE": ADMIN_SCOPE,
        }

    def token(
        self,
        *,
        admin: bool = False,
        customer_id: int | None = None,
        lifetime: int = 12 * 3600,
        **claims: Any,
    ) -> str:
        """An access token for the admin scope and/or one customer; `claims` override any field
        (None leaves a field out)."""
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "local-admin" if admin else f"local-customer-{customer_id}",
            "iat": now,
            "exp": now + lifetime,
            "scope": ADMIN_SCOPE if admin else "inventory/customer",
        }
        if customer_id is not None:
            body["customer_id"] = customer_id
        body.update(claims)
        body = {name: value for name, value in body.items() if value is not None}  # None: omit
        return jwt.encode(body, self._key, algorithm="RS256", headers={"kid": self.key_id})  # type: ignore[arg-type]

    def admin_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(admin=True)}"}
