"""What the doctor needs from AWS: bounded clients, and AWS errors reduced to what an
operator acts on (the missing action, the principal, the resource).

Every AWS call of the doctor's is bounded (the connect timeout, two attempts): in
a subnet without a NAT gateway or VPC endpoint botocore would otherwise retry for
minutes. Lookups made only to explain a failure (who am I, which cluster has this
endpoint) are best effort: when they are denied too, the report says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from ..settings import Settings

_INVALID_CREDENTIALS = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
}
_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}


def client_config(settings: Settings) -> Config:
    """No AWS call of the doctor's outlives a couple of connect timeouts."""
    return Config(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.connect_timeout * 2,
        retries={"max_attempts": 2, "mode": "standard"},
    )


@dataclass(frozen=True)
class AwsError:
    """A botocore error reduced to what an operator acts on."""

    code: str
    message: str

    @classmethod
    def of(cls, exc: ClientError) -> AwsError:
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        # moto answers some JSON-protocol calls with an XML body: unwrap it.
        inner_code = re.search(r"<Code>([^<]+)</Code>", message)
        if inner_code:
            inner_message = re.search(r"<Message>([^<]*)</Message>", message)
            code, message = inner_code.group(1), inner_message.group(1) if inner_message else ""
        return cls(code, message)

    @property
    def denied(self) -> bool:
        return self.code in _DENIED or "not authorized to perform" in self.message

    @property
    def invalid_credentials(self) -> bool:
        return self.code in _INVALID_CREDENTIALS

    @property
    def kms(self) -> bool:
        return (
            "KMS" in self.message
            or "kms:" in self.message
            or self.code.startswith("KMS")
            or self.code == "DecryptionFailure"
        )

    def _find(self, pattern: str) -> str | None:
        found = re.search(pattern, self.message)
        return found.group(1) if found else None

    @property
    def action(self) -> str | None:
        return self._find(r"not authorized to perform:? ([\w-]+:[\w*]+)")

    @property
    def principal(self) -> str | None:
        return self._find(r"User: (arn:[^\s<]+) is not authorized")

    @property
    def resource(self) -> str | None:
        return self._find(r"on resource:? (arn:[^\s<]+)")


def caller_identity(session: boto3.session.Session, config: Config) -> tuple[str | None, str]:
    """(account, principal ARN or why it is unknown); sts:GetCallerIdentity needs no permission."""
    try:
        identity = session.client("sts", config=config).get_caller_identity()
    except NoCredentialsError:
        return None, "no AWS credentials"
    except ClientError as exc:
        error = AwsError.of(exc)
        return None, f"unknown (sts:GetCallerIdentity failed: {error.code}: {error.message})"
    except BotoCoreError as exc:
        return None, f"unknown (sts:GetCallerIdentity failed: {exc})"
    return str(identity["Account"]), str(identity["Arn"])
