"""The credential link of the chain: the password, the Secrets Manager secret, or an IAM
token the writer's first login would use, and what to allow when AWS refuses it."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from ..credentials import CredentialProvider, SecretsManagerProvider, provider_for
from ..settings import Settings
from .aws import AwsError, caller_identity, client_config
from .report import Redactor, Status, StepResult

STEP = "credential"
NO_CREDENTIALS_FIX = (
    "Give the process AWS credentials: the ECS task role (TaskRoleArn), the Lambda execution "
    "role, or locally AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
)
_RDS_SUFFIXES = (".rds.amazonaws.com", ".rds.amazonaws.com.cn")


def obtain_credential(
    settings: Settings, redactor: Redactor
) -> tuple[StepResult, CredentialProvider | None]:
    """The credential the writer's first login would use, from where DB_AUTH says."""
    if settings.auth == "password":
        provider = provider_for(settings, settings.host)
        redactor.add(provider.get().password)
        return StepResult(
            STEP, Status.PASS, f"static password for {settings.user} (DB_PASSWORD)"
        ), provider
    session = boto3.session.Session(region_name=settings.region)
    if settings.auth == "secret":
        return _secret(settings, session, redactor)
    return _iam_token(settings, session, redactor)


def _secret(
    settings: Settings, session: boto3.session.Session, redactor: Redactor
) -> tuple[StepResult, CredentialProvider | None]:
    assert settings.secret_id is not None
    config = client_config(settings)
    secret_id = settings.secret_id
    provider = SecretsManagerProvider(
        secret_id=secret_id,
        region=settings.region,
        ttl=settings.secret_ttl,
        client=session.client("secretsmanager", config=config),
    )
    try:
        credential = provider.get()
    except NoCredentialsError:
        return _fail("no AWS credentials found to read the secret with", NO_CREDENTIALS_FIX), None
    except ClientError as exc:
        return _secret_refused(settings, session, config, AwsError.of(exc)), None
    except BotoCoreError as exc:
        return _fail(
            f"Secrets Manager did not answer: {exc}",
            f"Give this subnet a route to secretsmanager.{settings.region}.amazonaws.com: a NAT "
            "gateway, or an interface VPC endpoint for secretsmanager with private DNS",
        ), None
    except ValueError as exc:  # the provider's message names the secret, never its content
        return _fail(
            str(exc),
            "Store the secret as JSON with string username and password fields, as RDS's "
            "managed master secret is",
        ), None
    redactor.add(credential.password)
    summary = f"secret {secret_id} read from Secrets Manager: user {credential.user}"
    if settings.user and settings.user != credential.user:
        summary += f" (DB_USER={settings.user} is ignored with DB_AUTH=secret)"
    return StepResult(STEP, Status.PASS, summary, details={"user": credential.user}), provider


def _secret_refused(
    settings: Settings, session: boto3.session.Session, config: Config, error: AwsError
) -> StepResult:
    secret_id = settings.secret_id or ""
    if error.code == "ResourceNotFoundException":
        return _fail(
            f"there is no secret {secret_id} in {settings.region}",
            "Check DB_SECRET_ID (the secret's name or ARN) and DB_REGION",
        )
    if error.invalid_credentials:
        return _fail(
            f"AWS refused the credentials themselves ({error.code})",
            "The AWS credentials are invalid or expired: renew them, or let the task or "
            "function role provide them",
        )
    described = _describe_secret(session, config, secret_id)
    arn = error.resource if error.resource and ":secretsmanager:" in error.resource else None
    arn = arn or described.get("ARN") or (secret_id if secret_id.startswith("arn:") else None)
    secret = arn or (
        f"{secret_id} (its ARN: aws secretsmanager describe-secret --secret-id {secret_id} "
        "--query ARN)"
    )
    principal = error.principal or caller_identity(session, config)[1]
    if error.kms:
        key = error.resource if error.resource and ":kms:" in error.resource else None
        key = (
            key
            or described.get("KmsKeyId")
            or (
                "aws/secretsmanager, the AWS managed key"
                if "ARN" in described
                else f"the secret's KMS key (aws secretsmanager describe-secret --secret-id "
                f"{secret_id} --query KmsKeyId)"
            )
        )
        return StepResult(
            STEP,
            Status.FAIL,
            f"Secrets Manager could not decrypt {secret} for {principal}: KMS decrypt denied "
            f"({error.code}: {error.message})",
            fix=f"Allow kms:Decrypt on {key} for {principal}, in the key policy and in the "
            "principal's IAM policy (condition kms:ViaService "
            f"secretsmanager.{settings.region}.amazonaws.com)",
            details={"secret": arn, "kms_key": key, "principal": principal, "code": error.code},
        )
    if error.denied:
        action = error.action or "secretsmanager:GetSecretValue"
        return StepResult(
            STEP,
            Status.FAIL,
            f"{principal} may not {action} on {secret}",
            fix=f"Allow {action} on {arn or secret_id} in the IAM policy of {principal} "
            "(and in the secret's resource policy, if it has one)",
            details={"secret": arn, "action": action, "principal": principal, "code": error.code},
        )
    return _fail(
        f"Secrets Manager refused GetSecretValue on {secret}: {error.code}: {error.message}",
        "Check DB_SECRET_ID, DB_REGION and the secret's state (scheduled for deletion?)",
    )


def _describe_secret(
    session: boto3.session.Session, config: Config, secret_id: str
) -> dict[str, str]:
    """The secret's ARN and KMS key, when the caller may describe it (best effort)."""
    try:
        described = session.client("secretsmanager", config=config).describe_secret(
            SecretId=secret_id
        )
    except (ClientError, BotoCoreError):
        return {}
    found = {"ARN": described.get("ARN"), "KmsKeyId": described.get("KmsKeyId")}
    return {key: str(value) for key, value in found.items() if value}


def _iam_token(
    settings: Settings, session: boto3.session.Session, redactor: Redactor
) -> tuple[StepResult, CredentialProvider | None]:
    try:
        credentials = session.get_credentials()
    except BotoCoreError as exc:
        return _fail(f"the AWS credential chain failed: {exc}", NO_CREDENTIALS_FIX), None
    if credentials is None:
        return _fail(
            "no AWS credentials found to sign the IAM token with", NO_CREDENTIALS_FIX
        ), None
    provider = provider_for(settings, settings.host)
    try:
        credential = provider.get()
    except (NoCredentialsError, BotoCoreError) as exc:
        return _fail(f"could not sign an IAM token: {exc}", NO_CREDENTIALS_FIX), None
    redactor.add(credential.password)
    signed = token_target(credential.password)
    summary = (
        f"IAM token for {signed['user']} signed for {signed['host']}:{signed['port']} "
        f"with {credentials.method} credentials"
    )
    details: dict[str, Any] = {"signed_for": signed["host"], "credentials": credentials.method}
    iam_host = settings.iam_host
    if iam_host and iam_host != settings.host:
        mismatch = (
            f"tokens are signed for DB_IAM_HOST={iam_host} but the connection goes to "
            f"DB_HOST={settings.host}"
        )
        if is_rds_endpoint(iam_host) and is_rds_endpoint(settings.host):
            return StepResult(
                STEP,
                Status.FAIL,
                f"{mismatch}: two RDS endpoints, and RDS refuses a token signed for another",
                fix="Unset DB_IAM_HOST (it is for a tunnel or proxy in front of the endpoint "
                "it names), or set it to the endpoint DB_HOST names",
                details=details,
            ), None
        return StepResult(
            STEP,
            Status.WARN,
            summary,
            fix=f"{mismatch[0].upper()}{mismatch[1:]}: right for a tunnel or proxy in front of "
            f"{iam_host}, wrong otherwise (then unset DB_IAM_HOST)",
            details=details,
        ), provider
    return StepResult(STEP, Status.PASS, summary, details=details), provider


def token_target(token: str) -> dict[str, str]:
    """Host, port and DBUser of a presigned IAM token ("host:port/?Action=connect&..."), no more."""
    parts = urlsplit("//" + token)
    query = parse_qs(parts.query)
    return {
        "host": parts.hostname or "",
        "port": str(parts.port or ""),
        "user": query.get("DBUser", [""])[0],
    }


def is_rds_endpoint(host: str) -> bool:
    return host.lower().rstrip(".").endswith(_RDS_SUFFIXES)


def _fail(summary: str, fix: str) -> StepResult:
    return StepResult(STEP, Status.FAIL, summary, fix=fix)
