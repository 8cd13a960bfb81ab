"""A local stand-in for RDS's IAM database authentication, for the tests and `make run`.

Development and test tooling only: it is not in the Lambda zip
(scripts/package_lambda.py packs dataaccess and lambda/) nor in the API image.

    with LocalIamEndpoint(upstream=(cluster.host, cluster.port),
                          logins={"app_iam": local_password},
                          keys=[key], region="eu-west-1",
                          tls=cluster_tls(cluster.ca_file)) as rds:
        ...  # DB_HOST=localhost DB_PORT=rds.port DB_AUTH=iam, AWS_* = key.env()

`tokens` checks a token (SigV4, host, port, user, region, 15 minutes), `pgwire`
speaks the login phase of the PostgreSQL protocol, `endpoint` is the server.
"""

from .endpoint import LocalIamEndpoint, cluster_tls
from .tokens import (
    CLOCK_SKEW,
    OTHER_AWS_CREDENTIALS,
    TOKEN_LIFETIME,
    Endpoint,
    IamKey,
    TokenRefused,
    verify_token,
)

__all__ = [
    "CLOCK_SKEW",
    "OTHER_AWS_CREDENTIALS",
    "TOKEN_LIFETIME",
    "Endpoint",
    "IamKey",
    "LocalIamEndpoint",
    "TokenRefused",
    "cluster_tls",
    "verify_token",
]
