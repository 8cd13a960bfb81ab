"""scripts/deploy.sh: the order of the steps, the parameters it passes, and that
a failed migration stops the deploy before the service is touched."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.infra.conftest import REPO

DEPLOY = REPO / "scripts" / "deploy.sh"

# What the fake sha256sum says build/lambda.zip hashes to, and its S3 form.
ZIP_SHA256 = hashlib.sha256(b"lambda.zip").hexdigest()
ZIP_CHECKSUM = base64.b64encode(bytes.fromhex(ZIP_SHA256)).decode()

# The secret the secrets stack generated before RDS managed the master password, the
# identifier CloudFormation generated for a cluster then, and the secret RDS manages.
OLD_SECRET = (
    "arn:aws:secretsmanager:eu-west-1:111122223333:secret:dataaccess/dev/aurora-master-AbCdEf"
)
OLD_CLUSTER = "dataaccess-dev-aurora-cluster-1a2b3c4d5e6f"
RDS_SECRET = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:rds!cluster-0a1b2c3d-AbCdEf"

# head-object finds the object only after put-object; it then reports
# $FAKE_STORED_CHECKSUM (what S3 would have stored). The proxy stack exists once
# deployed (or when the test creates $FAKE_LOG.proxy), until deleted. The cluster
# is the fixed-name one unless $FAKE_LOG.legacy says it came from the old template;
# $FAKE_LOG.old-secrets says the secrets stack still exports the old secret, and
# $FAKE_LOG.upgraded that the aurora stack gives it back (LegacyMasterSecretArn).
FAKE_AWS = """#!/usr/bin/env bash
printf 'aws %s\\n' "$*" >>"$FAKE_LOG"
case "$*" in
  *"describe-stacks --stack-name dataaccess-dev-aurora "*"=='ClusterIdentifier'"*)
    if [[ -e "$FAKE_LOG.legacy" ]]; then echo @OLD_CLUSTER@; else echo dataaccess-dev; fi ;;
  *"describe-stacks --stack-name dataaccess-dev-aurora "*"=='LegacyMasterSecretArn'"*)
    if [[ -e "$FAKE_LOG.upgraded" ]]; then echo @OLD_SECRET@; else echo None; fi ;;
  *"describe-stacks --stack-name dataaccess-dev-aurora "*"=='MasterUserSecretArn'"*)
    echo '@RDS_SECRET@' ;;
  *"describe-stacks --stack-name dataaccess-dev-secrets "*"=='MasterSecretArn'"*)
    if [[ -e "$FAKE_LOG.old-secrets" ]]; then echo @OLD_SECRET@; else echo None; fi ;;
  *"ec2 describe-vpcs"*) echo 10.20.0.0/16 ;;
  *"ec2 describe-managed-prefix-lists"*) echo pl-6ea54007 ;;
  *"cloudformation deploy --stack-name dataaccess-dev-proxy "*) touch "$FAKE_LOG.proxy" ;;
  *"cloudformation delete-stack --stack-name dataaccess-dev-proxy"*) rm -f "$FAKE_LOG.proxy" ;;
  *"describe-stacks --stack-name dataaccess-dev-proxy "*)
    [[ -z "${FAKE_DESCRIBE_THROTTLED:-}" ]] ||
      { echo "An error occurred (Throttling): Rate exceeded" >&2; exit 254; }
    [[ -e "$FAKE_LOG.proxy" ]] ||
      { echo "An error occurred (ValidationError): Stack with id" \
          "dataaccess-dev-proxy does not exist" >&2; exit 254; }
    case "$*" in
      *ProxyResourceId*) echo prx-0fake0123456789a ;;
      *ProxyReaderEndpoint*) echo fake-reader.proxy.eu-west-1.rds.amazonaws.com ;;
      *) echo fake.proxy.eu-west-1.rds.amazonaws.com ;;
    esac ;;
  *"sts get-caller-identity"*) echo 111122223333 ;;
  *"s3api put-object"*) touch "$FAKE_LOG.uploaded" ;;
  *"s3api head-object"*)
    [[ -e "$FAKE_LOG.uploaded" ]] || exit 254
    echo "$FAKE_STORED_CHECKSUM" ;;
  *RepositoryUri*) echo 111122223333.dkr.ecr.eu-west-1.amazonaws.com/dataaccess-dev/api ;;
  *describe-stacks*) echo fake-output ;;
  *"ecs run-task"*) echo arn:aws:ecs:eu-west-1:111122223333:task/dataaccess-dev/abc ;;
  *"ecs describe-tasks"*) echo "$FAKE_MIGRATION_EXIT" ;;
  *"ecs wait tasks-stopped"*) [[ -z "${FAKE_TASK_NEVER_STOPS:-}" ]] || exit 255 ;;
esac
"""
FAKE_AWS = (
    FAKE_AWS.replace("@OLD_CLUSTER@", OLD_CLUSTER)
    .replace("@OLD_SECRET@", OLD_SECRET)
    .replace("@RDS_SECRET@", RDS_SECRET)
)
FAKE_TOOL = """#!/usr/bin/env bash
printf '%s %s\\n' "$(basename "$0")" "$*" >>"$FAKE_LOG"
case "$(basename "$0") $*" in
  "terraform "*output*) echo arn:aws:iam::111122223333:role/fake ;;
  "sha256sum ") /usr/bin/sha256sum ;;  # stdin: the lambda stack's configuration
  "sha256sum "*) echo "$FAKE_ZIP_SHA256  build/lambda.zip" ;;
  "make tf-plan "*) printf 'tfvars %s\\n' "$(cat "${2#TF_VARS_FILE=}")" >>"$FAKE_LOG" ;;
  "docker manifest inspect"*)
    printf '{"Descriptor": {"platform": {"architecture": "%s"}}}\\n' "${FAKE_IMAGE_ARCH:-amd64}" ;;
esac
"""
TOOLS = ("aws", "docker", "terraform", "make", "sha256sum")
TOPIC = "arn:aws:sns:eu-west-1:111122223333:dataaccess-prod-alarms"


@pytest.fixture
def fake_path(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """PATH with logging stand-ins for every external tool; returns env and the log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        script = bin_dir / tool
        script.write_text(FAKE_AWS if tool == "aws" else FAKE_TOOL)
        script.chmod(0o755)
    log = tmp_path / "calls.log"
    log.touch()
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "FAKE_LOG": str(log),
        "BUILD_DIR": str(tmp_path / "build"),
        "FAKE_ZIP_SHA256": ZIP_SHA256,
        "FAKE_STORED_CHECKSUM": ZIP_CHECKSUM,
    }
    return env, log


def deploy(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(DEPLOY), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def index_of(lines: list[str], pattern: str) -> int:
    found = [i for i, line in enumerate(lines) if re.search(pattern, line)]
    assert found, f"no line matches {pattern!r}"
    return found[0]


@pytest.fixture
def dry_run(fake_path) -> list[str]:
    """The dry-run output of a deploy with no configuration at all."""
    env, log = fake_path
    result = deploy(env, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert log.read_text() == "", "a dry run must not run any tool"
    return result.stdout.splitlines()


def test_dry_run_runs_every_step_in_order(dry_run):
    order = [
        # The network stack's flow log group takes the secrets stack's key.
        r"deploy --stack-name dataaccess-dev-secrets ",
        r"deploy --stack-name dataaccess-dev-network ",
        r"deploy --stack-name dataaccess-dev-aurora ",
        r"deploy --stack-name dataaccess-dev-ecs-cluster ",
        r"^\+ make tf-apply",
        r"^\+ docker push ",
        r"deploy --stack-name dataaccess-dev-migration ",
        r"^\+ aws .* ecs run-task .*--task-definition <migration.TaskDefinitionArn>",
        r"^\+ aws .* ecs wait tasks-stopped ",
        r"^\+ aws .* ecs describe-tasks .*exitCode",
        r"deploy --stack-name dataaccess-dev-ecs-api ",
        r"^\+ make lambda-package",
        r"^\+ aws .* s3api put-object .*--body build/lambda.zip ",
        r"deploy --stack-name dataaccess-dev-lambda ",
        r"deploy --stack-name dataaccess-dev-dashboard ",
    ]
    positions = [index_of(dry_run, pattern) for pattern in order]
    assert positions == sorted(positions), list(zip(order, positions, strict=True))


def test_migration_runs_privately_with_the_api_security_group(dry_run):
    run_task = dry_run[index_of(dry_run, r"ecs run-task")]
    assert "assignPublicIp=DISABLED" in run_task
    assert "subnets=[<network.PrivateSubnetIds>]" in run_task
    assert "securityGroups=[<network.ApiSecurityGroupId>]" in run_task
    assert "--launch-type FARGATE" in run_task


@pytest.mark.parametrize(
    "extra",
    [{}, {"DB_PROXY": "on", "PRIVATE_EGRESS": "endpoints", "MIN_CAPACITY": "1"}],
    ids=["default", "proxy-and-endpoints"],
)
def test_every_stack_gets_exactly_the_parameters_it_declares(fake_path, templates, extra):
    env, _ = fake_path
    result = deploy(env | extra, "--dry-run")
    assert result.returncode == 0, result.stderr
    deployed = set()
    for line in result.stdout.splitlines():
        if " cloudformation deploy " not in line:
            continue
        words = shlex.split(line[2:])
        stack = Path(words[words.index("--template-file") + 1]).stem
        overrides = words[words.index("--parameter-overrides") + 1 :]
        given = {w.split("=", 1)[0] for w in overrides}
        params = templates[stack].get("Parameters", {})
        required = {name for name, p in params.items() if "Default" not in p}
        assert given <= set(params), (stack, given - set(params))
        assert required <= given, (stack, required - given)
        deployed.add(stack)
    # cognito is the optional issuer, deployed once by hand when there is no other;
    # the proxy only with DB_PROXY=on.
    optional = {"cognito"} | ({"proxy"} if not extra else set())
    assert deployed == set(templates) - optional


def test_same_image_for_migration_and_service(dry_run):
    images = {m.group(1) for line in dry_run for m in [re.search(r"ImageUri=(\S+)", line)] if m}
    assert len(images) == 1, images


def test_real_run_without_configuration_fails_before_calling_anything(fake_path):
    env, log = fake_path
    result = deploy(env)
    assert result.returncode != 0
    assert "AWS_REGION is not set" in result.stderr
    assert log.read_text() == ""


def test_load_balancer_is_internal_by_default(dry_run):
    api = dry_run[index_of(dry_run, r"deploy --stack-name dataaccess-dev-ecs-api ")]
    assert " LoadBalancerScheme=internal " in f"{api} "
    assert "internet-facing" not in "\n".join(dry_run)
    network = dry_run[index_of(dry_run, r"deploy --stack-name dataaccess-dev-network ")]
    # The VPC's own CIDR, looked up from VPC_ID: never 0.0.0.0/0 unless public.
    assert "AlbIngressCidr=<vpc.CidrBlock>" in network
    assert "VpcCidr=<vpc.CidrBlock>" in network
    assert index_of(dry_run, r"ec2 describe-vpcs --vpc-ids <VPC_ID>") < index_of(
        dry_run, r"deploy --stack-name dataaccess-dev-network "
    )


@pytest.mark.parametrize(("args", "extra"), [(("--public",), {}), ((), {"PUBLIC_API": "true"})])
def test_internet_facing_only_when_asked_for(fake_path, args, extra):
    env, log = fake_path
    result = deploy(env | extra, "--dry-run", *args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    api = lines[index_of(lines, r"deploy --stack-name dataaccess-dev-ecs-api ")]
    assert " LoadBalancerScheme=internet-facing " in f"{api} "
    network = lines[index_of(lines, r"deploy --stack-name dataaccess-dev-network ")]
    assert "AlbIngressCidr=0.0.0.0/0" in network
    assert log.read_text() == ""


def test_alb_ingress_cidr_can_be_narrowed_and_0000_needs_public(fake_path):
    env, _ = fake_path
    narrowed = deploy(env | {"ALB_INGRESS_CIDR": "10.9.0.0/16"}, "--dry-run", "--public")
    assert narrowed.returncode == 0, narrowed.stderr
    assert "AlbIngressCidr=10.9.0.0/16" in narrowed.stdout
    refused = deploy(env | {"ALB_INGRESS_CIDR": "0.0.0.0/0"}, "--dry-run")
    assert refused.returncode != 0
    assert "--public" in refused.stderr
    bogus = deploy(env | {"PUBLIC_API": "yes"}, "--dry-run")
    assert bogus.returncode != 0
    assert "PUBLIC_API must be true or false" in bogus.stderr


def test_lambda_zip_goes_only_to_the_expected_owner_with_its_checksum(dry_run):
    upload = dry_run[index_of(dry_run, r"s3api put-object ")]
    assert "--expected-bucket-owner <account-id>" in upload
    assert "--checksum-algorithm SHA256" in upload
    assert "--checksum-sha256 <base64-sha256-of-build/lambda.zip>" in upload
    assert " s3 cp " not in "\n".join(dry_run)
    heads = [line for line in dry_run if "s3api head-object" in line]
    assert len(heads) == 2  # is it there already; is what arrived what was sent
    assert all("--expected-bucket-owner <account-id>" in h for h in heads)
    assert all("--checksum-mode ENABLED" in h for h in heads)
    assert index_of(dry_run, r"s3api put-object ") < index_of(
        dry_run, r"deploy --stack-name dataaccess-dev-lambda "
    )


def test_image_build_gets_the_pinned_base_image_and_ca_checksum(dry_run):
    build = dry_run[index_of(dry_run, r"^\+ docker build ")]
    assert "--build-arg PYTHON_IMAGE_DIGEST=<PYTHON_IMAGE_DIGEST>" in build
    assert "--build-arg RDS_CA_BUNDLE_SHA256=<RDS_CA_BUNDLE_SHA256>" in build


def backend_config(
    env: dict[str, str], text: str = 'bucket = "tf-state"\n', name: str = "backend.hcl"
) -> str:
    path = Path(env["HOME"]) / name
    path.write_text(text)
    return str(path)


def real_env(env: dict[str, str], migration_exit: str) -> dict[str, str]:
    return env | {
        "FAKE_MIGRATION_EXIT": migration_exit,
        "IMAGE_TAG": "abc123",
        "AWS_REGION": "eu-west-1",
        "VPC_ID": "vpc-0abc",
        "PRIVATE_SUBNET_IDS": "subnet-a,subnet-b",
        "PUBLIC_SUBNET_IDS": "subnet-c,subnet-d",
        "CERTIFICATE_ARN": "arn:aws:acm:eu-west-1:111122223333:certificate/abc",
        "AUTH_ISSUER": "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_example",
        "AUTH_AUDIENCE": "example-client-id",
        "AUTH_JWKS_URL": "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_example/.well-known/jwks.json",
        "ARTIFACT_BUCKET": "artifacts",
        "TF_BACKEND_CONFIG": backend_config(env),
        "PYTHON_IMAGE_DIGEST": "sha256:" + "ab" * 32,
        "RDS_CA_BUNDLE_SHA256": "cd" * 32,
    }


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PYTHON_IMAGE_DIGEST", ""),
        ("PYTHON_IMAGE_DIGEST", "python:3.12-slim"),
        ("RDS_CA_BUNDLE_SHA256", ""),
        ("RDS_CA_BUNDLE_SHA256", "sha256:" + "cd" * 32),
    ],
)
def test_real_run_needs_the_supply_chain_pins(fake_path, name, value):
    env, log = fake_path
    result = deploy(real_env(env, migration_exit="0") | {name: value})
    assert result.returncode != 0
    assert name in result.stderr
    assert log.read_text() == ""


def test_failed_migration_stops_before_the_service_update(fake_path):
    env, log = fake_path
    result = deploy(real_env(env, migration_exit="3"))
    assert result.returncode != 0
    assert "migration failed (exit code 3)" in result.stderr
    calls = log.read_text()
    assert "ecs run-task" in calls
    assert "dataaccess-dev-ecs-api" not in calls
    assert "dataaccess-dev-lambda" not in calls


def test_successful_migration_lets_the_deploy_finish(fake_path):
    env, log = fake_path
    result = deploy(real_env(env, migration_exit="0"))
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert index_of(calls, r"ecs describe-tasks") < index_of(calls, r"dataaccess-dev-ecs-api")
    assert index_of(calls, r"dataaccess-dev-ecs-api") < index_of(calls, r"dataaccess-dev-lambda")
    # Image already in the (fake) registry: not rebuilt under an immutable tag.
    assert not any(c.startswith("docker build") for c in calls)
    tfvars = Path(env["BUILD_DIR"]) / "terraform.tfvars.json"
    assert '"cluster_resource_id": "fake-output"' in tfvars.read_text()
    (upload,) = [c for c in calls if "s3api put-object" in c]
    assert "--expected-bucket-owner 111122223333" in upload
    assert f"--checksum-sha256 {ZIP_CHECKSUM}" in upload
    assert f"lambda/dataaccess-dev/{ZIP_SHA256}.zip" in upload
    api = calls[index_of(calls, r"dataaccess-dev-ecs-api")]
    assert "LoadBalancerScheme=internal" in api
    network = calls[index_of(calls, r"deploy --stack-name dataaccess-dev-network")]
    assert "AlbIngressCidr=10.20.0.0/16" in network


def test_upload_whose_stored_checksum_differs_stops_the_deploy(fake_path):
    env, log = fake_path
    result = deploy(real_env(env, migration_exit="0") | {"FAKE_STORED_CHECKSUM": "bm9wZQ=="})
    assert result.returncode != 0
    assert "has SHA-256 'bm9wZQ=='" in result.stderr
    assert "dataaccess-dev-lambda" not in log.read_text()


def test_bucket_owner_can_be_another_account(fake_path):
    env, log = fake_path
    result = deploy(real_env(env, migration_exit="0") | {"ARTIFACT_BUCKET_OWNER": "444455556666"})
    assert result.returncode == 0, result.stderr
    calls = log.read_text()
    assert "sts get-caller-identity" not in calls
    assert "--expected-bucket-owner 444455556666" in calls


def test_script_is_strict():
    text = DEPLOY.read_text()
    assert "set -euo pipefail" in text
    assert os.access(DEPLOY, os.X_OK)


def test_image_is_built_for_the_task_definitions_platform(dry_run, templates):
    build = dry_run[index_of(dry_run, r"^\+ docker build ")]
    assert "--platform linux/amd64" in build
    for stack in ("ecs-api", "migration"):
        (task,) = [
            r
            for r in templates[stack]["Resources"].values()
            if r["Type"] == "AWS::ECS::TaskDefinition"
        ]
        assert task["Properties"]["RuntimePlatform"]["CpuArchitecture"] == "X86_64"
    inspect = index_of(dry_run, r"^\+ docker image inspect ")
    assert index_of(dry_run, r"^\+ docker build ") < inspect < index_of(dry_run, r"docker push")


def test_a_pushed_image_of_another_architecture_stops_the_deploy(fake_path):
    env, log = fake_path
    result = deploy(real_env(env, migration_exit="0") | {"FAKE_IMAGE_ARCH": "arm64"})
    assert result.returncode != 0
    assert "is not linux/amd64" in result.stderr
    assert "ecs run-task" not in log.read_text()


@pytest.mark.parametrize(
    ("tag", "started_by"),
    [
        ("v1.2.3", "deploy-v1-2-3"),
        ("0123456789abcdef0123456789abcdef01234567", "deploy-0123456789abcdef0123456789abc"),
    ],
)
def test_started_by_fits_what_run_task_accepts(fake_path, tag, started_by):
    env, log = fake_path
    result = deploy(real_env(env, migration_exit="0") | {"IMAGE_TAG": tag})
    assert result.returncode == 0, result.stderr
    (run_task,) = [c for c in log.read_text().splitlines() if "ecs run-task" in c]
    given = shlex.split(run_task)[shlex.split(run_task).index("--started-by") + 1]
    assert given == started_by
    assert re.fullmatch(r"[A-Za-z0-9_/-]{1,36}", given)


def test_a_migration_that_outlives_the_timeout_is_stopped(fake_path):
    env, log = fake_path
    result = deploy(
        real_env(env, migration_exit="0")
        | {"FAKE_TASK_NEVER_STOPS": "1", "MIGRATION_TIMEOUT_SECONDS": "0"}
    )
    assert result.returncode != 0
    assert "still running after 0s: stopped it" in result.stderr
    calls = log.read_text()
    assert "ecs stop-task --cluster fake-output --task arn:aws:ecs:" in calls
    assert "dataaccess-dev-ecs-api" not in calls


def test_terraform_state_key_is_the_environments_own(fake_path):
    env, log = fake_path
    prod = {"ENVIRONMENT": "prod", "ALARM_TOPIC_ARN": TOPIC}
    result = deploy(real_env(env, migration_exit="0") | prod)
    assert result.returncode == 0, result.stderr
    (init,) = [c for c in log.read_text().splitlines() if c.startswith("make tf-init")]
    assert "TF_STATE_KEY=dataaccess/prod/iam.tfstate" in init


def test_a_backend_file_with_its_own_state_key_is_refused(fake_path):
    env, log = fake_path
    config = backend_config(env, 'bucket = "b"\nkey = "dev/terraform.tfstate"\n', "keyed.hcl")
    result = deploy(real_env(env, migration_exit="0") | {"TF_BACKEND_CONFIG": config})
    assert result.returncode != 0
    assert "sets key: remove it" in result.stderr
    assert "make tf-init" not in log.read_text()


# --- Database and network options: proxy, auto-pause, private egress ----------------


def dry_run_with(fake_path, **extra: str) -> list[str]:
    env, log = fake_path
    result = deploy(env | extra, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert log.read_text() == ""
    return result.stdout.splitlines()


def stack_line(lines: list[str], stack: str) -> str:
    return lines[index_of(lines, rf"cloudformation deploy --stack-name dataaccess-dev-{stack} ")]


def overrides(line: str) -> dict[str, str]:
    words = shlex.split(line[2:])
    return dict(w.split("=", 1) for w in words[words.index("--parameter-overrides") + 1 :])


def test_default_deploy_has_nat_no_proxy_and_no_auto_pause(dry_run):
    network = overrides(stack_line(dry_run, "network"))
    assert network["PrivateEgress"] == "nat"
    assert network["AwsApiEgressCidr"] == "0.0.0.0/0"
    assert network["EnableFlowLogs"] == "true"
    # Looked up before the network stack: CloudFormation cannot.
    assert network["S3PrefixListId"] == "<s3.PrefixListId>"
    lookup = index_of(dry_run, r"describe-managed-prefix-lists .*com.amazonaws.<AWS_REGION>.s3")
    assert lookup < index_of(dry_run, r"deploy --stack-name dataaccess-dev-network ")
    aurora = overrides(stack_line(dry_run, "aurora"))
    assert (aurora["MinCapacity"], aurora["ProxyEnabled"]) == ("0.5", "false")
    lambda_ = overrides(stack_line(dry_run, "lambda"))
    assert (lambda_["DbProxyEndpoint"], lambda_["DbProxyReaderEndpoint"]) == ("", "")
    assert not any(" deploy --stack-name dataaccess-dev-proxy " in line for line in dry_run)
    (tfvars,) = [line for line in dry_run if line.startswith("+ write ")]
    assert '"enable_proxy": false, "proxy_resource_id": ""' in tfvars


def test_proxy_comes_between_two_terraform_passes_and_feeds_the_functions(fake_path):
    lines = dry_run_with(fake_path, DB_PROXY="on")
    writes = [i for i, line in enumerate(lines) if line.startswith("+ write ")]
    assert len(writes) == 2
    first, second = (lines[i] for i in writes)
    # First pass: the proxy's role, before the proxy exists; second: the grants through it.
    assert '"enable_proxy": true, "proxy_resource_id": ""' in first
    assert '"enable_proxy": true, "proxy_resource_id": "<proxy.ProxyResourceId>"' in second
    proxy = index_of(lines, r"cloudformation deploy --stack-name dataaccess-dev-proxy ")
    applies = [i for i, line in enumerate(lines) if line.startswith("+ make tf-apply")]
    assert writes[0] < applies[0] < proxy < writes[1] < applies[1]
    assert overrides(lines[proxy])["ProxyRoleArn"] == "<terraform.rds_proxy_role_arn>"
    lambda_ = overrides(stack_line(lines, "lambda"))
    assert lambda_["DbProxyEndpoint"] == "<proxy.ProxyEndpoint>"
    assert lambda_["DbProxyReaderEndpoint"] == "<proxy.ProxyReaderEndpoint>"
    assert applies[1] < index_of(lines, r"deploy --stack-name dataaccess-dev-lambda ")
    # The API keeps the cluster endpoints; the aurora stack knows, for its auto-pause rule.
    assert "Proxy" not in stack_line(lines, "ecs-api")
    assert overrides(stack_line(lines, "aurora"))["ProxyEnabled"] == "true"


def test_auto_pause_reaches_the_aurora_stack(fake_path):
    lines = dry_run_with(fake_path, MIN_CAPACITY="0", SECONDS_UNTIL_AUTO_PAUSE="900")
    aurora = overrides(stack_line(lines, "aurora"))
    assert (aurora["MinCapacity"], aurora["SecondsUntilAutoPause"]) == ("0", "900")
    assert aurora["ProxyEnabled"] == "false"
    # /readyz pings the database every 15 s: the cluster would never pause.
    assert overrides(stack_line(lines, "ecs-api"))["HealthCheckPath"] == "/healthz"


def test_a_cluster_that_cannot_pause_keeps_the_readiness_check(dry_run):
    assert overrides(stack_line(dry_run, "ecs-api"))["HealthCheckPath"] == "/readyz"


def test_endpoints_narrow_egress_to_the_vpc_and_need_the_route_tables(fake_path):
    lines = dry_run_with(
        fake_path, PRIVATE_EGRESS="endpoints", PRIVATE_ROUTE_TABLE_IDS="rtb-a,rtb-b"
    )
    network = overrides(stack_line(lines, "network"))
    assert network["PrivateEgress"] == "endpoints"
    assert network["AwsApiEgressCidr"] == "<vpc.CidrBlock>"
    assert network["PrivateRouteTableIds"] == "rtb-a,rtb-b"
    assert network["S3PrefixListId"] == "<s3.PrefixListId>"
    given = dry_run_with(fake_path, S3_PREFIX_LIST_ID="pl-0123abcd")
    assert overrides(stack_line(given, "network"))["S3PrefixListId"] == "pl-0123abcd"
    assert not any("describe-managed-prefix-lists" in line for line in given)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"DB_PROXY": "on", "MIN_CAPACITY": "0"}, "cannot be combined with DB_PROXY=on"),
        ({"DB_PROXY": "yes"}, "DB_PROXY must be on or off"),
        ({"MIN_CAPACITY": "0.25"}, "MIN_CAPACITY must be ACUs"),
        ({"SECONDS_UNTIL_AUTO_PAUSE": "60"}, "SECONDS_UNTIL_AUTO_PAUSE must be 300 to 86400"),
        ({"PRIVATE_EGRESS": "vpn"}, "PRIVATE_EGRESS must be nat or endpoints"),
        ({"ENABLE_FLOW_LOGS": "no"}, "ENABLE_FLOW_LOGS must be true or false"),
    ],
)
def test_bad_options_are_refused_before_anything_runs(fake_path, extra, message):
    env, log = fake_path
    result = deploy(env | extra, "--dry-run")
    assert result.returncode != 0
    assert message in result.stderr
    assert result.stdout == ""
    assert log.read_text() == ""


def test_a_real_run_with_endpoints_needs_the_route_tables(fake_path):
    env, log = fake_path
    result = deploy(real_env(env, migration_exit="0") | {"PRIVATE_EGRESS": "endpoints"})
    assert result.returncode != 0
    assert "PRIVATE_ROUTE_TABLE_IDS" in result.stderr
    assert log.read_text() == ""


def tfvars_passes(calls: list[str]) -> list[str]:
    return [c for c in calls if c.startswith("tfvars ")]


def test_first_proxy_deploy_grants_through_it_before_the_functions_use_it(fake_path):
    env, log = fake_path
    result = deploy(real_env(env, migration_exit="0") | {"DB_PROXY": "on"})
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    first, second = tfvars_passes(calls)
    assert '"enable_proxy": true, "proxy_resource_id": ""' in first
    assert '"enable_proxy": true, "proxy_resource_id": "prx-0fake0123456789a"' in second
    lambda_ = calls[index_of(calls, r"deploy --stack-name dataaccess-dev-lambda ")]
    assert "DbProxyEndpoint=fake.proxy.eu-west-1.rds.amazonaws.com" in lambda_
    assert "DbProxyReaderEndpoint=fake-reader.proxy.eu-west-1.rds.amazonaws.com" in lambda_
    assert calls.index(second) < calls.index(lambda_)


def test_a_proxy_that_exists_needs_one_terraform_pass(fake_path):
    env, log = fake_path
    Path(f"{env['FAKE_LOG']}.proxy").touch()
    result = deploy(real_env(env, migration_exit="0") | {"DB_PROXY": "on"})
    assert result.returncode == 0, result.stderr
    (only,) = tfvars_passes(log.read_text().splitlines())
    assert '"enable_proxy": true, "proxy_resource_id": "prx-0fake0123456789a"' in only


def test_proxy_off_moves_the_functions_first_then_removes_the_proxy_and_its_grants(fake_path):
    env, log = fake_path
    Path(f"{env['FAKE_LOG']}.proxy").touch()
    result = deploy(real_env(env, migration_exit="0"))
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    first, last = tfvars_passes(calls)
    # Kept while the functions may still use it; the aurora stack is told, too.
    assert '"enable_proxy": true, "proxy_resource_id": "prx-0fake0123456789a"' in first
    aurora = calls[index_of(calls, r"deploy --stack-name dataaccess-dev-aurora ")]
    assert "ProxyEnabled=true" in aurora
    lambda_ = index_of(calls, r"deploy --stack-name dataaccess-dev-lambda ")
    assert "DbProxyEndpoint= " in calls[lambda_] + " "
    delete = index_of(calls, r"cloudformation delete-stack --stack-name dataaccess-dev-proxy")
    wait = index_of(calls, r"wait stack-delete-complete --stack-name dataaccess-dev-proxy")
    assert lambda_ < delete < wait < calls.index(last)
    assert '"enable_proxy": false, "proxy_resource_id": ""' in last


def test_auto_pause_waits_until_a_left_over_proxy_is_gone(fake_path):
    env, log = fake_path
    Path(f"{env['FAKE_LOG']}.proxy").touch()
    result = deploy(real_env(env, migration_exit="0") | {"MIN_CAPACITY": "0"})
    assert result.returncode != 0
    assert "deploy with DB_PROXY=off first" in result.stderr
    assert " cloudformation deploy " not in log.read_text()


def test_monitoring_options_reach_their_stacks(fake_path):
    env, _ = fake_path
    digest = "public.ecr.aws/xray/aws-xray-daemon@sha256:" + "ef" * 32
    extra = {"LAMBDA_TRACING": "PassThrough", "API_TRACING": "true", "XRAY_DAEMON_IMAGE": digest}
    result = deploy(env | extra | {"WAF_RATE_LIMIT_PER_5MIN": "500"}, "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    api = lines[index_of(lines, r"deploy --stack-name dataaccess-dev-ecs-api ")]
    assert "RateLimitPer5Min=500" in api
    assert "EnableTracing=true" in api
    assert f"XRayDaemonImage={digest}" in api
    assert (
        "Tracing=PassThrough"
        in lines[index_of(lines, r"deploy --stack-name dataaccess-dev-lambda ")]
    )
    dashboard = lines[index_of(lines, r"deploy --stack-name dataaccess-dev-dashboard ")]
    assert "LoadBalancerFullName=<ecs-api.LoadBalancerFullName>" in dashboard


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"API_TRACING": "true"}, "API_TRACING=true needs XRAY_DAEMON_IMAGE pinned by digest"),
        ({"LAMBDA_TRACING": "On"}, "LAMBDA_TRACING must be Active or PassThrough"),
        ({"WAF_RATE_LIMIT_PER_5MIN": "5"}, "WAF_RATE_LIMIT_PER_5MIN must be a whole number"),
    ],
)
def test_bad_monitoring_options_are_refused(fake_path, extra, message):
    env, _ = fake_path
    result = deploy(env | extra, "--dry-run")
    assert result.returncode != 0
    assert message in result.stderr


# --- Issue 14: the first real deploy ------------------------------------------------


def calls_of(log: Path) -> list[str]:
    return log.read_text().splitlines()


def deployed_with(calls: list[str], stack: str) -> dict[str, str]:
    line = calls[index_of(calls, rf"cloudformation deploy --stack-name dataaccess-dev-{stack} ")]
    return overrides(f"+ {line}")


def test_terraform_gets_the_rds_managed_secret_from_the_aurora_stack(dry_run):
    lookup = index_of(
        dry_run, r"describe-stacks --stack-name dataaccess-dev-aurora .*MasterUserSecretArn"
    )
    assert index_of(dry_run, r"deploy --stack-name dataaccess-dev-aurora ") < lookup
    (tfvars,) = [line for line in dry_run if line.startswith("+ write ")]
    assert '"master_secret_arn": "<aurora.MasterUserSecretArn>"' in tfvars
    # The key stack has nothing else to be given; no template expands a transform.
    assert overrides(stack_line(dry_run, "secrets")) == {
        "ProjectName": "dataaccess",
        "EnvironmentName": "dev",
    }
    assert all("CAPABILITY_AUTO_EXPAND" not in line for line in dry_run)


def test_a_new_cluster_gets_the_fixed_identifier(fake_path):
    env, log = fake_path
    result = deploy(real_env(env, migration_exit="0"))
    assert result.returncode == 0, result.stderr
    calls = calls_of(log)
    aurora = deployed_with(calls, "aurora")
    assert (aurora["LegacyClusterIdentifier"], aurora["LegacyMasterSecretArn"]) == ("", "")
    assert aurora["MasterUsername"] == "dbadmin"
    assert f'"master_secret_arn": "{RDS_SECRET}"' in tfvars_passes(calls)[0]
    assert index_of(calls, r"deploy --stack-name dataaccess-dev-secrets ") < index_of(
        calls, r"deploy --stack-name dataaccess-dev-network "
    )


def test_upgrading_an_old_cluster_keeps_its_identity_and_drops_the_old_secret_last(fake_path):
    """A cluster from the old template: a new identifier or MasterUsername text would
    replace it, and the old secrets stack's export cannot go while imported."""
    env, log = fake_path
    Path(f"{env['FAKE_LOG']}.legacy").touch()
    Path(f"{env['FAKE_LOG']}.old-secrets").touch()
    result = deploy(real_env(env, migration_exit="0"))
    assert result.returncode == 0, result.stderr
    calls = calls_of(log)
    aurora = deployed_with(calls, "aurora")
    assert aurora["LegacyClusterIdentifier"] == OLD_CLUSTER
    assert aurora["LegacyMasterSecretArn"] == OLD_SECRET
    # The secrets stack follows the aurora and migration stacks, which stop importing
    # its MasterSecretArn, and comes before the service.
    secrets = index_of(calls, r"deploy --stack-name dataaccess-dev-secrets ")
    assert index_of(calls, r"deploy --stack-name dataaccess-dev-migration ") < secrets
    assert secrets < index_of(calls, r"deploy --stack-name dataaccess-dev-ecs-api ")
    assert len([c for c in calls if "deploy --stack-name dataaccess-dev-secrets " in c]) == 1
    assert f'"master_secret_arn": "{RDS_SECRET}"' in tfvars_passes(calls)[0]


def test_an_upgraded_cluster_keeps_its_identity_on_every_later_deploy(fake_path):
    env, log = fake_path
    Path(f"{env['FAKE_LOG']}.legacy").touch()
    Path(f"{env['FAKE_LOG']}.upgraded").touch()
    result = deploy(real_env(env, migration_exit="0"))
    assert result.returncode == 0, result.stderr
    calls = calls_of(log)
    aurora = deployed_with(calls, "aurora")
    assert (aurora["LegacyClusterIdentifier"], aurora["LegacyMasterSecretArn"]) == (
        OLD_CLUSTER,
        OLD_SECRET,
    )
    assert index_of(calls, r"deploy --stack-name dataaccess-dev-secrets ") < index_of(
        calls, r"deploy --stack-name dataaccess-dev-aurora "
    )


def test_an_old_cluster_whose_secret_is_not_found_stops_the_deploy(fake_path):
    env, log = fake_path
    Path(f"{env['FAKE_LOG']}.legacy").touch()
    result = deploy(real_env(env, migration_exit="0"))
    assert result.returncode != 0
    assert f"cluster {OLD_CLUSTER} predates the RDS-managed master password" in result.stderr
    assert " cloudformation deploy " not in log.read_text()


@pytest.mark.parametrize("args", [("--dry-run",), ()])
def test_prod_without_an_alarm_topic_is_refused_before_anything_runs(fake_path, args):
    env, log = fake_path
    base = env if args else real_env(env, migration_exit="0")
    result = deploy(base | {"ENVIRONMENT": "prod"}, *args)
    assert result.returncode != 0
    assert "ENVIRONMENT=prod needs ALARM_TOPIC_ARN" in result.stderr
    assert result.stdout == ""
    assert log.read_text() == ""


def test_prod_with_an_alarm_topic_hands_it_to_the_alarms(fake_path):
    env, _ = fake_path
    result = deploy(env | {"ENVIRONMENT": "prod", "ALARM_TOPIC_ARN": TOPIC}, "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    line = lines[index_of(lines, r"deploy --stack-name dataaccess-prod-lambda ")]
    assert overrides(line)["AlarmTopicArn"] == TOPIC


def test_functions_are_capped_by_the_event_source_not_by_a_reservation(dry_run, fake_path):
    lambda_ = overrides(stack_line(dry_run, "lambda"))
    assert (lambda_["StockEventsMaxConcurrency"], lambda_["ReservedConcurrency"]) == ("5", "false")
    lines = dry_run_with(
        fake_path, STOCK_EVENTS_MAX_CONCURRENCY="20", LAMBDA_RESERVED_CONCURRENCY="true"
    )
    lambda_ = overrides(stack_line(lines, "lambda"))
    assert (lambda_["StockEventsMaxConcurrency"], lambda_["ReservedConcurrency"]) == ("20", "true")


def test_snapstart_is_off_unless_asked_for(dry_run, fake_path):
    assert overrides(stack_line(dry_run, "lambda"))["SnapStart"] == "off"
    lines = dry_run_with(fake_path, LAMBDA_SNAPSTART="on")
    assert overrides(stack_line(lines, "lambda"))["SnapStart"] == "on"


def test_a_dry_run_shows_the_function_revision_it_would_derive(dry_run):
    lambda_ = overrides(stack_line(dry_run, "lambda"))
    assert lambda_["FunctionRevision"] == "<zip-sha256-12>-<config-sha256-12>"


def function_revision(fake_path, **extra: str) -> str:
    """The FunctionRevision a real run (stand-in tools) gives the lambda stack."""
    env, log = fake_path
    log.write_text("")
    result = deploy(real_env(env, migration_exit="0") | extra)
    assert result.returncode == 0, result.stderr
    return deployed_with(calls_of(log), "lambda")["FunctionRevision"]


def test_the_function_revision_names_the_zip_and_the_configuration(fake_path, templates):
    """The alias live stays on the published version until the version's Description
    changes: a new zip, template or parameter must each publish, the same state none."""
    first = function_revision(fake_path)
    zip_part, config_part = first.split("-")
    assert zip_part == ZIP_SHA256[:12]
    assert re.fullmatch(r"[0-9a-f]{12}", config_part)
    assert re.fullmatch(
        templates["lambda"]["Parameters"]["FunctionRevision"]["AllowedPattern"], first
    )
    assert function_revision(fake_path) == first  # a re-run publishes nothing
    for extra in ({"LAMBDA_SNAPSTART": "on"}, {"LAMBDA_TRACING": "PassThrough"}):
        other = function_revision(fake_path, **extra)
        assert other.split("-")[0] == zip_part, extra
        assert other != first, extra


def test_the_function_revision_follows_the_proxy(fake_path):
    """DB_PROXY=off must reach the alias (a new version) before the proxy is deleted."""
    env, _ = fake_path
    with_proxy = function_revision(fake_path, DB_PROXY="on")
    Path(f"{env['FAKE_LOG']}.proxy").touch()
    without = function_revision(fake_path)
    assert with_proxy != without


def test_bad_snapstart_is_refused_before_anything_runs(fake_path):
    env, log = fake_path
    result = deploy(env | {"LAMBDA_SNAPSTART": "yes"}, "--dry-run")
    assert result.returncode != 0
    assert "LAMBDA_SNAPSTART must be on or off" in result.stderr
    assert result.stdout == ""
    assert log.read_text() == ""


def test_operator_access_is_off_unless_asked_for_and_reaches_every_part(dry_run, fake_path):
    assert overrides(stack_line(dry_run, "network"))["OperatorAccess"] == "false"
    assert overrides(stack_line(dry_run, "ecs-api"))["OperatorAccess"] == "false"
    (tfvars,) = [line for line in dry_run if line.startswith("+ write ")]
    assert '"enable_operator_access": false' in tfvars
    lines = dry_run_with(fake_path, OPERATOR_ACCESS="true")
    assert overrides(stack_line(lines, "network"))["OperatorAccess"] == "true"
    assert overrides(stack_line(lines, "ecs-api"))["OperatorAccess"] == "true"
    (tfvars,) = [line for line in lines if line.startswith("+ write ")]
    assert '"enable_operator_access": true' in tfvars
    # The task role's ECS Exec permissions exist before the tasks that use them.
    apply = index_of(lines, r"^\+ make tf-apply")
    assert apply < index_of(lines, r"deploy --stack-name dataaccess-dev-ecs-api ")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"STOCK_EVENTS_MAX_CONCURRENCY": "1"}, "STOCK_EVENTS_MAX_CONCURRENCY must be 2 to 1000"),
        (
            {"STOCK_EVENTS_MAX_CONCURRENCY": "lots"},
            "STOCK_EVENTS_MAX_CONCURRENCY must be 2 to 1000",
        ),
        ({"LAMBDA_RESERVED_CONCURRENCY": "5"}, "LAMBDA_RESERVED_CONCURRENCY must be true or false"),
        ({"OPERATOR_ACCESS": "yes"}, "OPERATOR_ACCESS must be true or false"),
    ],
)
def test_bad_function_and_operator_options_are_refused(fake_path, extra, message):
    env, log = fake_path
    result = deploy(env | extra, "--dry-run")
    assert result.returncode != 0
    assert message in result.stderr
    assert log.read_text() == ""


def test_a_dry_run_says_what_would_happen_not_what_did(dry_run):
    text = "\n".join(dry_run)
    assert "migration succeeded" not in text
    assert "uploaded (SHA-256 verified)" not in text
    assert not any(line.startswith("==> deployed") for line in dry_run)
    assert dry_run[-1].startswith("==> dry run: nothing was deployed")
    assert "==> would wait for the migration task" in text


def test_a_real_run_reports_what_happened(fake_path):
    env, _ = fake_path
    result = deploy(real_env(env, migration_exit="0"))
    assert result.returncode == 0, result.stderr
    assert "==> migration succeeded" in result.stdout
    assert result.stdout.splitlines()[-1] == "==> deployed dataaccess-dev at abc123"


def test_a_stack_look_up_that_fails_for_another_reason_stops_the_deploy(fake_path):
    # Read as "no such stack", a throttled look-up would make existing resources look new.
    env, log = fake_path
    result = deploy(real_env(env, migration_exit="0") | {"FAKE_DESCRIBE_THROTTLED": "1"})
    assert result.returncode != 0
    assert "Rate exceeded" in result.stderr
    assert "could not read stack dataaccess-dev-proxy" in result.stderr
    assert "cloudformation deploy" not in log.read_text()


@pytest.mark.parametrize("value", ["30m", "08", "-1"])
def test_a_bad_migration_timeout_is_refused_before_anything_runs(fake_path, value):
    env, log = fake_path
    result = deploy(real_env(env, migration_exit="0") | {"MIGRATION_TIMEOUT_SECONDS": value})
    assert result.returncode != 0
    assert "MIGRATION_TIMEOUT_SECONDS must be a whole number" in result.stderr
    assert log.read_text() == ""


def test_the_registry_login_comes_before_the_pushed_image_check(fake_path):
    env, log = fake_path
    result = deploy(real_env(env, migration_exit="0"))
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert index_of(calls, r"^docker login ") < index_of(calls, r"^docker manifest inspect ")
