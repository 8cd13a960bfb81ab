"""The doctor's verdicts that need no database: settings, login messages, IAM hints (moto),
the report's shape, exit codes and redaction."""

import json
from dataclasses import replace

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto import settings as moto_settings

from dataaccess import Settings
from dataaccess.doctor import EXIT_CODES, STEPS, Report, Status, StepResult, diagnose
from dataaccess.doctor.aws import AwsError
from dataaccess.doctor.cli import build_parser
from dataaccess.doctor.credential import obtain_credential, token_target
from dataaccess.doctor.login import explain_failure
from dataaccess.doctor.report import Redactor
from dataaccess.doctor.schema import _pending

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's
SECRET_ARN = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:db/master-AbCdEf"
PAM = (
    'connection to server at "db.example" (10.0.0.5), port 5432 failed: '
    'FATAL:  PAM authentication failed for user "app_iam"\n'
)


def iam_settings(host, **env):
    return Settings.from_env(
        {
            "DB_HOST": host,
            "DB_NAME": "inventory",
            "DB_USER": "app_iam",
            "DB_AUTH": "iam",
            "DB_REGION": REGION,
            "DB_SSLMODE": "require",
            "DB_ALLOW_INSECURE_TLS": "true",
            **env,
        }
    )


@pytest.fixture
def aws():
    with mock_aws():
        yield


def create_cluster(name="inventory", *, iam_auth=True):
    cluster = boto3.client("rds", region_name=REGION).create_db_cluster(
        DBClusterIdentifier=name,
        Engine="aurora-postgresql",
        MasterUsername="master",
        MasterUserPassword="not-used-1234",
        EnableIAMDatabaseAuthentication=iam_auth,
    )["DBCluster"]
    return cluster["Endpoint"], cluster["DbClusterResourceId"]


# -- settings, before anything connects ----------------------------------------------


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DB_NAME": "x", "DB_USER": "u", "DB_PASSWORD": "p", "DB_AUTH": "password"}, "DB_HOST"),
        ({"DB_HOST": "h", "DB_NAME": "x", "DB_USER": "u", "DB_PORT": "five"}, "DB_PORT"),
        ({"DB_HOST": "h", "DB_NAME": "x", "DB_USER": "u", "DB_AUTH": "kerberos"}, "DB_AUTH"),
    ],
)
def test_bad_settings_stop_the_walk_at_the_first_step(env, named):
    report = diagnose(env)
    assert report.failed is not None
    assert report.failed.step == "settings"
    assert named in report.failed.summary
    assert report.exit_code == EXIT_CODES["settings"] == 3
    assert report.not_run == STEPS[1:]
    assert "FAIL  settings" in report.render()


# -- a refused IAM login ---------------------------------------------------------------


@pytest.mark.usefixtures("aws")
def test_pam_failure_names_the_exact_resource_the_policy_must_allow():
    endpoint, resource_id = create_cluster()
    verdict = explain_failure("login", PAM, iam_settings(endpoint), host=endpoint)
    assert verdict.status is Status.FAIL
    assert "refused the IAM token for app_iam" in verdict.summary
    arn = f"arn:aws:rds-db:{REGION}:{ACCOUNT}:dbuser:{resource_id}/app_iam"
    assert f"Allow rds-db:connect on {arn}" in verdict.fix
    assert "member of rds_iam" in verdict.fix
    assert "dbuser is exactly app_iam" in verdict.fix
    assert verdict.details["rds_db_arn"] == arn
    assert any(f"cluster inventory ({resource_id})" in note for note in verdict.notes)


@pytest.mark.usefixtures("aws")
def test_pam_failure_on_a_cluster_without_iam_authentication_says_turn_it_on():
    endpoint, _ = create_cluster("no-iam", iam_auth=False)
    verdict = explain_failure("login", PAM, iam_settings(endpoint), host=endpoint)
    assert verdict.fix.startswith("Turn on IAM database authentication on cluster no-iam")


@pytest.mark.usefixtures("aws")
def test_pam_failure_behind_rds_proxy_names_the_proxy_resource_id():
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24")["Subnet"]["SubnetId"]
        for i in (1, 2)
    ]
    proxy = boto3.client("rds", region_name=REGION).create_db_proxy(
        DBProxyName="inventory-proxy",
        EngineFamily="POSTGRESQL",
        Auth=[{"AuthScheme": "SECRETS", "IAMAuth": "REQUIRED", "SecretArn": SECRET_ARN}],
        RoleArn=f"arn:aws:iam::{ACCOUNT}:role/proxy",
        VpcSubnetIds=subnets,
    )["DBProxy"]
    resource_id = proxy["DBProxyArn"].rsplit(":", 1)[-1]
    assert resource_id.startswith("prx-")
    settings = replace(iam_settings(proxy["Endpoint"]), proxy=True)
    verdict = explain_failure("login", PAM, settings, host=proxy["Endpoint"])
    assert f"arn:aws:rds-db:{REGION}:{ACCOUNT}:dbuser:{resource_id}/app_iam" in verdict.fix
    assert verdict.details["proxy"] == "inventory-proxy"


@pytest.mark.usefixtures("aws")
def test_pam_failure_when_the_lookup_is_denied_still_gives_the_hint(monkeypatch):
    endpoint, _ = create_cluster()
    iam = boto3.client("iam", region_name=REGION)
    iam.create_user(UserName="api-task")
    iam.put_user_policy(
        UserName="api-task",
        PolicyName="connect-only",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "rds-db:connect", "Resource": "*"}],
            }
        ),
    )
    key = iam.create_access_key(UserName="api-task")["AccessKey"]
    with monkeypatch.context() as m:
        m.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        m.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        m.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # IAM enforced from here
        verdict = explain_failure("login", PAM, iam_settings(endpoint), host=endpoint)
    principal = f"arn:aws:iam::{ACCOUNT}:user/api-task"
    arn = f"arn:aws:rds-db:{REGION}:{ACCOUNT}:dbuser:<cluster-resource-id>/app_iam"
    assert verdict.fix.startswith(f"Allow rds-db:connect on {arn} for {principal}")
    assert any(
        "rds:DescribeDBClusters was denied" in note and "describe-db-clusters" in note
        for note in verdict.notes
    ), verdict.notes


@pytest.mark.usefixtures("aws")
def test_a_password_check_instead_of_pam_means_the_role_is_not_in_rds_iam():
    endpoint, _ = create_cluster()
    message = 'FATAL:  password authentication failed for user "app_iam"'
    verdict = explain_failure("login", message, iam_settings(endpoint), host=endpoint)
    assert "not a member of rds_iam" in verdict.notes[0]


@pytest.mark.usefixtures("aws")
def test_a_token_signed_for_another_endpoint_is_named():
    endpoint, resource_id = create_cluster()
    settings = iam_settings("localhost", DB_IAM_HOST=endpoint)
    verdict = explain_failure("login", PAM, settings, host="localhost", signed_host=endpoint)
    assert any(
        f"signed for DB_IAM_HOST={endpoint} but the connection goes to DB_HOST=localhost" in n
        for n in verdict.notes
    )
    assert resource_id in verdict.fix


@pytest.mark.parametrize(
    ("message", "says", "fix"),
    [
        ('FATAL:  database "invntory" does not exist', "DB_NAME", "Set DB_NAME"),
        ('FATAL:  role "app_iam" is not permitted to log in', "NOLOGIN", "LOGIN"),
        ("FATAL:  session is read-only", "read-only server", "writer) endpoint"),
        ("FATAL:  sorry, too many clients already", "no connection slot", "RDS Proxy"),
        ("FATAL:  the database system is starting up", "resuming from 0 ACU", "Re-run"),
        (
            'FATAL:  no pg_hba.conf entry for host "10.0.0.9", user "app_iam", no encryption',
            "pg_hba.conf",
            "DB_SSLMODE=verify-full",
        ),
    ],
)
def test_other_refusals_say_what_to_change(message, says, fix):
    settings = iam_settings("db.example")
    verdict = explain_failure("login", message, settings, host="db.example")
    assert says in verdict.summary
    assert fix in verdict.fix


def test_a_refused_password_and_a_refused_secret_are_told_apart():
    password = Settings.from_env(
        {"DB_HOST": "h", "DB_NAME": "d", "DB_USER": "app_iam", "DB_AUTH": "password"}
        | {"DB_PASSWORD": "pw", "DB_SSLMODE": "disable", "DB_ALLOW_INSECURE_TLS": "1"}
    )
    failed = 'FATAL:  password authentication failed for user "app_iam"'
    assert (
        "DB_PASSWORD is not app_iam's" in explain_failure("login", failed, password, host="h").fix
    )
    secret = replace(password, auth="secret", secret_id="db/master", password=None)
    assert "rotation" in explain_failure("login", failed, secret, host="h").fix


# -- IAM tokens ------------------------------------------------------------------------


@pytest.mark.usefixtures("aws")
def test_tokens_for_one_rds_endpoint_sent_to_another_fail_before_the_login():
    writer = "inventory.cluster-abc.us-east-1.rds.amazonaws.com"
    other = "old.cluster-def.us-east-1.rds.amazonaws.com"
    result, provider = obtain_credential(iam_settings(writer, DB_IAM_HOST=other), Redactor())
    assert result.status is Status.FAIL
    assert provider is None
    assert f"DB_IAM_HOST={other} but the connection goes to DB_HOST={writer}" in result.summary
    assert "Unset DB_IAM_HOST" in result.fix


@pytest.mark.usefixtures("aws")
def test_a_tunnel_in_front_of_the_endpoint_is_a_warning_and_the_token_stays_hidden():
    redactor = Redactor()
    endpoint = "inventory.cluster-abc.us-east-1.rds.amazonaws.com"
    settings = iam_settings("localhost", DB_IAM_HOST=endpoint)
    result, provider = obtain_credential(settings, redactor)
    assert result.status is Status.WARN
    assert "right for a tunnel or proxy" in result.fix
    token = provider.get().password
    assert "X-Amz-Signature=" in token
    shown = redactor.report({}, [result]).to_json()
    assert token not in shown
    assert "X-Amz-Signature" not in shown


def test_token_target_reads_host_port_and_user_only():
    token = (
        "db.example:5432/?Action=connect&DBUser=app_iam&X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIA%2F20261202%2Fus-east-1%2Frds-db%2Faws4_request"
        "&X-Amz-Signature=0123abcd"
    )
    assert token_target(token) == {"host": "db.example", "port": "5432", "user": "app_iam"}


# -- AWS errors ------------------------------------------------------------------------


def client_error(code, message):
    return ClientError({"Error": {"Code": code, "Message": message}}, "GetSecretValue")


def test_aws_errors_yield_the_missing_action_the_principal_and_the_resource():
    error = AwsError.of(
        client_error(
            "AccessDeniedException",
            f"User: arn:aws:sts::{ACCOUNT}:assumed-role/api/task is not authorized to perform: "
            f"secretsmanager:GetSecretValue on resource: arn:aws:secretsmanager:{REGION}:"
            f"{ACCOUNT}:secret:db/master-AbCdEf because no identity-based policy allows it",
        )
    )
    assert error.denied
    assert not error.kms
    assert error.action == "secretsmanager:GetSecretValue"
    assert error.principal == f"arn:aws:sts::{ACCOUNT}:assumed-role/api/task"
    assert error.resource == f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:db/master-AbCdEf"
    assert AwsError.of(client_error("AccessDeniedException", "Access to KMS is not allowed")).kms
    assert AwsError.of(client_error("DecryptionFailure", "could not decrypt")).kms


# -- the report ------------------------------------------------------------------------


def test_every_step_has_its_own_exit_code_and_the_cli_documents_them():
    codes = [EXIT_CODES[step] for step in STEPS]
    assert len(set(codes)) == len(STEPS)
    assert not {0, 1, 2} & set(codes)
    epilog = build_parser()._subparsers._group_actions[0].choices["doctor"].epilog
    for step, code in EXIT_CODES.items():
        assert f"{code} {step} failed" in epilog


def test_the_report_marks_each_step_and_lists_what_did_not_run():
    report = Report(
        target={"host": "db.example", "port": 5432, "database": "d", "user": "u", "auth": "iam"},
        steps=(
            StepResult("settings", Status.PASS, "fine"),
            StepResult("dns", Status.WARN, "public", fix="look"),
            StepResult("tcp", Status.FAIL, "no answer", fix="open the security group"),
        ),
    )
    text = report.render().splitlines()
    assert text[0] == "dataaccess doctor: u@db.example:5432/d (DB_AUTH=iam)"
    assert text[1].split()[:2] == ["ok", "settings"]
    assert text[2].split()[:2] == ["warn", "dns"]
    assert text[4].split()[:2] == ["FAIL", "tcp"]
    assert "fix: open the security group" in text[5]
    assert "tls, credential, login, migrations, privileges, reader" in text[6]
    assert text[-1] == "FAILED at tcp (exit status 5)"
    data = json.loads(report.to_json())
    assert (data["ok"], data["exit_code"], data["failed_step"]) == (False, 5, "tcp")
    assert [s["status"] for s in data["steps"]] == ["pass", "warn", "fail"]
    assert data["not_run"] == list(STEPS[3:])


def test_the_redactor_hides_secrets_and_anything_shaped_like_one_in_every_field():
    redactor = Redactor()
    redactor.add("s3cr3t-pw")
    result = StepResult(
        "login",
        Status.FAIL,
        "refused s3cr3t-pw",
        fix="dsn host=h password=hunter2 dbname=d",
        notes=("h:5432/?Action=connect&X-Amz-Signature=abc123&X-Amz-Security-Token=tok",),
        details={"list": ["s3cr3t-pw"], "n": 1},
    )
    report = redactor.report({"user": "s3cr3t-pw"}, [result])
    shown = report.to_json() + report.render()
    for leaked in ("s3cr3t-pw", "hunter2", "abc123", "tok"):
        assert leaked not in shown, leaked
    assert report.steps[0].details["n"] == 1


def test_pending_revisions_are_listed_oldest_first():
    assert _pending(["0007", "0006", "0005", "0004"], ["0005"]) == ["0006", "0007"]
