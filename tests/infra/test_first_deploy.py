"""What a first real deploy runs into that cfn-lint and checkov do not see: each test
names the failure it prevents."""

from __future__ import annotations

import fnmatch
import json
import re
from typing import Any

import boto3
import pytest
from moto import mock_aws

from dataaccess.credentials import SecretsManagerProvider
from tests.infra.conftest import REPO, TF_DIR, Resolver

# The secret the secrets stack generated before RDS managed the master password, and
# a secret RDS manages (it names them rds!cluster-<uuid>).
OLD_SECRET = (
    "arn:aws:secretsmanager:eu-west-1:111122223333:secret:dataaccess/dev/aurora-master-AbCdEf"
)
RDS_SECRET = (
    "arn:aws:secretsmanager:eu-west-1:111122223333:secret:"
    "rds!cluster-0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d-AbCdEf"
)

# The property that names each resource type that can outlive its stack. A fixed
# value there makes recreating the stack fail with AlreadyExists (names AWS keeps
# unique); user pools and KMS keys may share names and are not listed.
UNIQUE_NAME_PROPERTY = {
    "AWS::ECR::Repository": "RepositoryName",
    "AWS::SecretsManager::Secret": "Name",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::S3::Bucket": "BucketName",
    "AWS::DynamoDB::Table": "TableName",
    "AWS::SQS::Queue": "QueueName",
}


def retained(templates):
    for stack, template in templates.items():
        for name, resource in template["Resources"].items():
            if resource.get("DeletionPolicy") == "Retain":
                yield stack, name, resource


def test_some_resources_are_retained(templates):
    # The next test is only meaningful while something is retained.
    assert any(r["Type"] == "AWS::ECR::Repository" for _, _, r in retained(templates))


def test_no_retained_resource_has_a_fixed_unique_name(templates):
    fixed = [
        (stack, name)
        for stack, name, resource in retained(templates)
        if UNIQUE_NAME_PROPERTY.get(resource["Type"]) in resource.get("Properties", {})
    ]
    assert fixed == [], "a recreated stack would fail with AlreadyExists"


@pytest.mark.parametrize("stack", ["ecs-cluster"])
def test_the_repository_is_found_by_its_outputs(templates, stack):
    outputs = templates[stack]["Outputs"]
    assert {"RepositoryUri", "RepositoryArn"} <= set(outputs)


# --- 1. The master password: RDS-managed, no rotation function ----------------------


def test_no_stack_deploys_a_rotation_function(templates):
    """The HostedRotationLambda (PostgreSQLSingleUser, python3.12) failed with
    Runtime.ImportModuleError: No module named '_pg', and its schedule rotates as soon
    as it is created: the first deploy failed on it."""
    for stack, template in templates.items():
        assert "Transform" not in template, stack
        for name, resource in template["Resources"].items():
            assert resource["Type"] not in {
                "AWS::SecretsManager::RotationSchedule",
                "AWS::SecretsManager::SecretTargetAttachment",
                "AWS::Serverless::Function",
            }, (stack, name)
            assert "HostedRotationLambda" not in str(resource), (stack, name)


def test_the_master_password_is_rds_managed_under_the_project_key(templates, resolver):
    cluster = templates["aurora"]["Resources"]["Cluster"]["Properties"]
    props = resolver.resolve("aurora", cluster)
    assert props["ManageMasterUserPassword"] is True
    assert "MasterUserPassword" not in props
    assert props["MasterUserSecret"]["KmsKeyId"] == props["KmsKeyId"] == "<DataKey.Arn>"
    # A new cluster's user name is a plain value: nothing to resolve from a secret.
    assert props["MasterUsername"] == "dbadmin"
    # The migration takes its login from RDS's secret, the only one there is.
    secret = templates["aurora"]["Outputs"]["MasterUserSecretArn"]
    assert secret["Value"] == {"Fn::GetAtt": ["Cluster", "MasterUserSecret.SecretArn"]}
    (task,) = (
        r
        for r in templates["migration"]["Resources"].values()
        if r["Type"] == "AWS::ECS::TaskDefinition"
    )
    (container,) = task["Properties"]["ContainerDefinitions"]
    values = resolver.resolve("migration", container["Secrets"])
    assert {s["Name"]: s["ValueFrom"] for s in values} == {
        "DB_USER": "<Cluster.MasterUserSecret.SecretArn>:username::",
        "DB_PASSWORD": "<Cluster.MasterUserSecret.SecretArn>:password::",
    }


def test_terraform_accepts_the_arn_rds_gives_its_secret():
    """RDS names the secret rds!cluster-<uuid>: master_secret_arn's pattern had no '!'."""
    variables = (TF_DIR / "variables.tf").read_text()
    block = re.search(r'variable "master_secret_arn" \{.*?\n\}', variables, re.S)
    assert block
    (pattern,) = re.findall(r'regex\("([^"]+)"', block.group(0))
    pattern = pattern.replace("\\\\", "\\")
    assert re.fullmatch(pattern, RDS_SECRET)
    assert not re.fullmatch(pattern, "arn:aws:secretsmanager:eu-west-1:111122223333:secret:*")


@mock_aws
def test_secret_mode_logs_in_with_the_rds_managed_secrets_two_keys():
    """DB_AUTH=secret reads {"username", "password"}, all RDS's secret has (no host:
    DB_HOST gives it)."""
    client = boto3.client("secretsmanager", region_name="eu-west-1")
    arn = client.create_secret(
        Name="rds!cluster-0a1b2c3d",
        SecretString=json.dumps({"username": "dbadmin", "password": "generated-by-rds"}),
    )["ARN"]
    provider = SecretsManagerProvider(secret_id=arn, region="eu-west-1", client=client)
    credential = provider.get()
    assert (credential.user, credential.password) == ("dbadmin", "generated-by-rds")


def test_the_key_policy_leaves_the_secrets_key_use_to_iam(templates):
    """RDS creates the secret, and later rotates it through a grant, with the permissions
    of whoever deploys the aurora stack (kms:DescribeKey, Decrypt, GenerateDataKey,
    CreateGrant): the key policy must delegate to IAM for that to be possible."""
    key = templates["secrets"]["Resources"]["DataKey"]["Properties"]["KeyPolicy"]
    (delegation,) = [s for s in key["Statement"] if s["Sid"] == "AccountAdministersKeyThroughIam"]
    assert delegation["Principal"] == {
        "AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
    }
    assert delegation["Action"] == "kms:*"
    assert "Condition" not in delegation


# --- 7. Log groups AWS would create ---------------------------------------------------

# Every resource type the templates use that makes AWS create a log group, and the
# ones that make none; a type in neither list fails the test below, so a new one is
# looked at before it ships.
CREATES_NO_LOG_GROUP = {
    "AWS::ApplicationAutoScaling::ScalableTarget",
    "AWS::ApplicationAutoScaling::ScalingPolicy",
    "AWS::CloudWatch::Alarm",
    "AWS::CloudWatch::Dashboard",
    # User pools log only through AWS::Cognito::LogDeliveryConfiguration, not used.
    "AWS::Cognito::UserPool",
    "AWS::Cognito::UserPoolClient",
    "AWS::Cognito::UserPoolDomain",
    "AWS::Cognito::UserPoolResourceServer",
    "AWS::EC2::SecurityGroup",
    "AWS::EC2::SecurityGroupEgress",
    "AWS::EC2::SecurityGroupIngress",
    "AWS::EC2::VPCEndpoint",
    "AWS::ECR::Repository",
    "AWS::ECS::Service",
    # Access logs go to S3 (AccessLogBucket).
    "AWS::ElasticLoadBalancingV2::Listener",
    "AWS::ElasticLoadBalancingV2::LoadBalancer",
    "AWS::ElasticLoadBalancingV2::TargetGroup",
    "AWS::Events::Rule",
    "AWS::IAM::Role",
    "AWS::KMS::Alias",
    "AWS::KMS::Key",
    # A version or an alias logs where its function does (LoggingConfig).
    "AWS::Lambda::Alias",
    "AWS::Lambda::EventSourceMapping",
    "AWS::Lambda::Permission",
    "AWS::Lambda::Version",
    "AWS::Logs::LogGroup",
    "AWS::RDS::DBClusterParameterGroup",
    "AWS::RDS::DBProxyEndpoint",
    "AWS::RDS::DBProxyTargetGroup",
    "AWS::RDS::DBSubnetGroup",
    "AWS::SQS::Queue",
    "AWS::SecretsManager::Secret",
    "AWS::SecretsManager::SecretTargetAttachment",
    "AWS::WAFv2::WebACL",
    "AWS::WAFv2::WebACLAssociation",
}
# Enhanced monitoring writes to RDSOSMetrics, one group RDS keeps for every instance
# in the account and region (30 days' retention, OS metrics only): not this project's
# to create, and no per-project key can cover it.
ACCOUNT_WIDE = {"RDSOSMetrics"}
OLD_CLUSTER = "dataaccess-dev-aurora-cluster-1a2b3c4d5e6f"
EVERYTHING_ON = {
    "aurora": {"LegacyClusterIdentifier": OLD_CLUSTER, "LegacyMasterSecretArn": OLD_SECRET},
    "ecs-api": {
        "EnableTracing": "true",
        "XRayDaemonImage": "public.ecr.aws/xray/aws-xray-daemon@sha256:" + "ab" * 32,
        "OperatorAccess": "true",
    },
    "network": {
        "VpcCidr": "10.20.0.0/16",
        "S3PrefixListId": "pl-6ea54007",
        "PrivateEgress": "endpoints",
        "AwsApiEgressCidr": "10.20.0.0/16",
        "PrivateRouteTableIds": "rtb-0aaa1111bbbb2222c",
        "OperatorAccess": "true",
    },
    "lambda": {"ReservedConcurrency": "true", "Tracing": "PassThrough", "SnapStart": "on"},
}


def refs(node: Any) -> set[str]:
    """Every resource or parameter a node names with Ref or GetAtt."""
    if isinstance(node, dict):
        if set(node) == {"Ref"}:
            return {node["Ref"]}
        if set(node) == {"Fn::GetAtt"}:
            target = node["Fn::GetAtt"]
            return {target[0] if isinstance(target, list) else target.split(".")[0]}
        return set().union(*(refs(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(refs(v) for v in node)) if node else set()
    return set()


def to_group(resolver: Resolver, stack: str, value: str) -> str | dict[str, str]:
    """A resolved log group name, or {"Ref": id} where it names a group of the stack
    (the resolver renders Ref and GetAtt of a resource as <Id> and <Id.Attr>)."""
    marker = re.fullmatch(r"<([A-Za-z0-9]+)(\.Arn)?>", value)
    if marker and marker.group(1) in resolver.templates[stack]["Resources"]:
        return {"Ref": marker.group(1)}
    return value


def groups_aws_creates(resolver: Resolver, stack: str) -> list[tuple[str, str | dict[str, str]]]:
    """(resource, group) for every log group a resource of the stack makes AWS write
    to, with these parameters."""
    found: list[tuple[str, str]] = []
    for name, resource in resolver.active(stack).items():
        kind = resource["Type"]
        props = resolver.resolve(stack, resource.get("Properties", {}))
        if kind == "AWS::Lambda::Function":
            default = f"/aws/lambda/{props.get('FunctionName', '<generated>')}"
            found.append((name, props.get("LoggingConfig", {}).get("LogGroup", default)))
        elif kind == "AWS::RDS::DBCluster":
            # An old cluster keeps its generated identifier, which the stack is given;
            # any other generated one cannot be named in advance.
            given = "LegacyClusterIdentifier" in resolver.templates[stack]["Parameters"]
            generated = resolver.parameter(stack, "LegacyClusterIdentifier") if given else ""
            cluster_id = props.get("DBClusterIdentifier") or generated or "<generated>"
            for log in props.get("EnableCloudwatchLogsExports", []):
                found.append((name, f"/aws/rds/cluster/{cluster_id}/{log}"))
        elif kind == "AWS::RDS::DBInstance":
            for log in props.get("EnableCloudwatchLogsExports", []):
                found.append((name, f"/aws/rds/instance/{props['DBInstanceIdentifier']}/{log}"))
            if props.get("MonitoringInterval", 0):
                found.append((name, "RDSOSMetrics"))
        elif kind == "AWS::RDS::DBProxy":
            found.append((name, f"/aws/rds/proxy/{props['DBProxyName']}"))
        elif kind == "AWS::ECS::Cluster":
            settings = {s["Name"]: s["Value"] for s in props.get("ClusterSettings", [])}
            if settings.get("containerInsights") in {"enabled", "enhanced"}:
                insights = f"/aws/ecs/containerinsights/{props['ClusterName']}/performance"
                found.append((name, insights))
            execute = props.get("Configuration", {}).get("ExecuteCommandConfiguration", {})
            if execute.get("Logging") == "OVERRIDE":
                found.append((name, execute["LogConfiguration"]["CloudWatchLogGroupName"]))
        elif kind == "AWS::ECS::TaskDefinition":
            for container in props["ContainerDefinitions"]:
                options = container["LogConfiguration"]["Options"]
                assert "awslogs-create-group" not in options, (stack, name)
                found.append((name, options["awslogs-group"]))
        elif kind == "AWS::EC2::FlowLog":
            if props.get("LogDestinationType") == "cloud-watch-logs":
                found.append((name, props["LogGroupName"]))
        elif kind == "AWS::SecretsManager::RotationSchedule":
            # The transform's function, in a nested stack of its own: not declarable.
            if "HostedRotationLambda" in props:
                function = props["HostedRotationLambda"].get("RotationLambdaName", "<generated>")
                found.append((name, f"/aws/lambda/{function}"))
        elif kind == "AWS::WAFv2::LoggingConfiguration":
            found.extend((name, destination) for destination in props["LogDestinationConfigs"])
        else:
            assert kind in CREATES_NO_LOG_GROUP, f"{stack}: does {kind} create a log group?"
    return [(name, to_group(resolver, stack, group)) for name, group in found]


def key_policy_admits(resolver: Resolver, group_name: str) -> bool:
    key = resolver.templates["secrets"]["Resources"]["DataKey"]["Properties"]["KeyPolicy"]
    (logs,) = [
        s for s in key["Statement"] if s["Sid"] == "CloudWatchLogsEncryptsThisProjectsLogGroups"
    ]
    pattern = resolver.resolve(
        "secrets", logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
    )
    return fnmatch.fnmatchcase(
        f"arn:aws:logs:eu-west-1:111122223333:log-group:{group_name}", pattern
    )


@pytest.mark.parametrize("parameters", [{}, EVERYTHING_ON], ids=["defaults", "everything-on"])
def test_every_log_group_aws_would_create_is_declared_encrypted_and_retained(templates, parameters):
    """A group AWS creates itself (an exported database log, a proxy's, a function's,
    Container Insights') has no retention and no customer key, and the database's can
    hold statement text. Each must be the stack's own, created before what writes it."""
    resolver = Resolver(templates, parameters)
    checked = 0
    for stack in templates:
        declared = {
            logical: resolver.resolve(stack, r["Properties"])
            for logical, r in resolver.active(stack).items()
            if r["Type"] == "AWS::Logs::LogGroup"
        }
        by_name = {props["LogGroupName"]: logical for logical, props in declared.items()}
        resources = resolver.templates[stack]["Resources"]
        for writer, group in groups_aws_creates(resolver, stack):
            if isinstance(group, str) and group in ACCOUNT_WIDE:
                continue
            logical = group["Ref"] if isinstance(group, dict) else by_name.get(group)
            assert logical in declared, (
                f"{stack}: {writer} writes to {group}, which no stack declares"
            )
            props = declared[logical]
            assert isinstance(props.get("RetentionInDays"), int), (stack, logical)
            assert resources[logical]["Properties"]["KmsKeyId"] == {
                "Fn::ImportValue": {"Fn::Sub": "${ProjectName}-${EnvironmentName}-KmsKeyArn"}
            }, (stack, logical)
            assert key_policy_admits(resolver, props["LogGroupName"]), props["LogGroupName"]
            # Created first: a writer that came first would have AWS create the group.
            depends = resources[writer].get("DependsOn", [])
            depends = [depends] if isinstance(depends, str) else depends
            assert logical in set(depends) | refs(resources[writer]), (stack, writer, logical)
            checked += 1
    assert checked >= 10


def test_the_database_log_group_is_named_before_the_cluster_exists(templates, resolver):
    aurora = templates["aurora"]["Resources"]
    group = aurora["PostgresqlLogGroup"]["Properties"]
    # No Ref to the cluster in its name: the cluster depends on it, not the reverse.
    assert "Cluster" not in refs(group)
    assert (
        resolver.resolve("aurora", group["LogGroupName"])
        == "/aws/rds/cluster/dataaccess-dev/postgresql"
    )
    old = Resolver(templates, {"aurora": EVERYTHING_ON["aurora"]})
    assert (
        old.resolve("aurora", group["LogGroupName"]) == f"/aws/rds/cluster/{OLD_CLUSTER}/postgresql"
    )
    assert "DBClusterIdentifier" not in old.resolve("aurora", aurora["Cluster"]["Properties"])


@pytest.mark.parametrize(
    ("parameters", "refused"),
    [
        ({}, None),
        (EVERYTHING_ON["aurora"], None),
        ({"LegacyClusterIdentifier": OLD_CLUSTER}, "needs LegacyMasterSecretArn"),
        ({"LegacyMasterSecretArn": OLD_SECRET}, "needs LegacyClusterIdentifier"),
    ],
)
def test_an_old_cluster_is_described_whole_or_not_at_all(templates, parameters, refused):
    refusals = Resolver(templates, {"aurora": parameters}).refusals("aurora")
    assert [r for r in refusals if refused and refused in r] == ([refusals[0]] if refused else [])
    assert len(refusals) == (1 if refused else 0), refusals


# --- 10. Operator access ---------------------------------------------------------------


def api_task(resolver: Resolver) -> tuple[dict[str, Any], dict[str, Any]]:
    resources = resolver.active("ecs-api")
    task = resolver.resolve("ecs-api", resources["TaskDefinition"]["Properties"])
    service = resolver.resolve("ecs-api", resources["Service"]["Properties"])
    (api,) = [c for c in task["ContainerDefinitions"] if c["Name"] == "api"]
    return api, service


def test_operator_access_is_off_by_default_and_keeps_the_read_only_root(templates, resolver):
    api, service = api_task(resolver)
    assert service["EnableExecuteCommand"] is False
    assert api["ReadonlyRootFilesystem"] is True
    assert "LinuxParameters" not in api


def test_operator_access_turns_on_ecs_exec_which_needs_a_writable_root(templates):
    """ECS Exec's agent does not run on a read-only root filesystem; without this the
    tasks accept execute-command and every session fails."""
    api, service = api_task(Resolver(templates, {"ecs-api": {"OperatorAccess": "true"}}))
    assert service["EnableExecuteCommand"] is True
    assert api["ReadonlyRootFilesystem"] is False
    assert api["LinuxParameters"] == {"InitProcessEnabled": True}


def test_ecs_exec_sessions_are_logged_where_terraform_lets_the_task_role_write(templates, resolver):
    cluster = resolver.resolve(
        "ecs-cluster", templates["ecs-cluster"]["Resources"]["Cluster"]["Properties"]
    )
    config = templates["ecs-cluster"]["Resources"]["Cluster"]["Properties"]["Configuration"]
    logging = config["ExecuteCommandConfiguration"]["LogConfiguration"]
    assert logging["CloudWatchEncryptionEnabled"] is True
    group = templates["ecs-cluster"]["Resources"][logging["CloudWatchLogGroupName"]["Ref"]]
    name = resolver.resolve("ecs-cluster", group["Properties"]["LogGroupName"])
    assert name == f"/ecs/{cluster['ClusterName']}/exec"
    main = (TF_DIR / "main.tf").read_text()
    # Terraform names the same cluster and group from its prefix, before they exist.
    assert ':cluster/${local.prefix}"' in main
    assert "log-group:/ecs/${local.prefix}/exec" in main
    assert cluster["ClusterName"] == "dataaccess-dev"


@pytest.mark.parametrize(("operator", "expected"), [("false", set()), ("true", {"ssmmessages"})])
def test_without_nat_ecs_exec_gets_its_endpoint_only_with_operator_access(
    templates, operator, expected
):
    resolver = Resolver(
        templates, {"network": EVERYTHING_ON["network"] | {"OperatorAccess": operator}}
    )
    services = {
        resolver.resolve("network", r["Properties"]["ServiceName"]).rsplit(".", 1)[-1]
        for r in resolver.active("network").values()
        if r["Type"] == "AWS::EC2::VPCEndpoint"
    }
    assert services & {"ssmmessages"} == expected


def test_the_operator_role_has_one_name_in_terraform_and_the_migration():
    variables = (TF_DIR / "variables.tf").read_text()
    block = re.search(r'variable "db_operator_user" \{.*?\n\}', variables, re.S)
    assert block
    (default,) = re.findall(r'default\s*=\s*"([a-z_]+)"', block.group(0))
    (migration,) = (REPO / "alembic" / "versions").glob("0008_*.py")
    assert f'DEFAULT_OPERATOR = "{default}"' in migration.read_text()
    assert default == "app_operator"


# --- 11. Parameter values that break ----------------------------------------------------

# Fargate's task CPU and memory pairs (Amazon ECS Developer Guide, "Task CPU and
# memory"; the 8 and 16 vCPU sizes are not offered here).
FARGATE = {
    256: {512, 1024, 2048},
    512: set(range(1024, 4096 + 1, 1024)),
    1024: set(range(2048, 8192 + 1, 1024)),
    2048: set(range(4096, 16384 + 1, 1024)),
    4096: set(range(8192, 30720 + 1, 1024)),
}


def test_every_cpu_and_memory_pair_the_api_accepts_is_one_fargate_runs(templates):
    params = templates["ecs-api"]["Parameters"]
    assert {int(c) for c in params["TaskCpu"]["AllowedValues"]} == set(FARGATE)
    assert {int(m) for m in params["TaskMemory"]["AllowedValues"]} == set().union(*FARGATE.values())
    accepted = set()
    for cpu in params["TaskCpu"]["AllowedValues"]:
        for memory in params["TaskMemory"]["AllowedValues"]:
            resolver = Resolver(templates, {"ecs-api": {"TaskCpu": cpu, "TaskMemory": memory}})
            refusals = resolver.refusals("ecs-api")
            if not refusals:
                accepted.add((int(cpu), int(memory)))
            else:
                assert refusals == [r for r in refusals if f"TaskCpu {cpu} runs with" in r]
    assert accepted == {(c, m) for c, ms in FARGATE.items() for m in ms}
    default = (int(params["TaskCpu"]["Default"]), int(params["TaskMemory"]["Default"]))
    assert default in accepted


def test_the_migration_task_size_is_one_fargate_runs(templates):
    (task,) = (
        r["Properties"]
        for r in templates["migration"]["Resources"].values()
        if r["Type"] == "AWS::ECS::TaskDefinition"
    )
    assert int(task["Memory"]) in FARGATE[int(task["Cpu"])]


@pytest.mark.parametrize(
    ("parameters", "refused"),
    [
        ({"EnvironmentName": "prod"}, True),
        (
            {"EnvironmentName": "prod", "AlarmTopicArn": "arn:aws:sns:eu-west-1:111122223333:ops"},
            False,
        ),
        ({"EnvironmentName": "dev"}, False),
        ({"EnvironmentName": "staging"}, False),
    ],
)
def test_prod_alarms_must_notify_someone(templates, parameters, refused):
    refusals = Resolver(templates, {"lambda": parameters}).refusals("lambda")
    assert bool(refusals) is refused
    if refused:
        (message,) = refusals
        assert "needs AlarmTopicArn" in message


def test_every_stack_with_alarms_refuses_prod_without_a_topic(templates):
    with_alarms = {
        stack
        for stack, template in templates.items()
        if any(r["Type"] == "AWS::CloudWatch::Alarm" for r in template["Resources"].values())
    }
    assert with_alarms == {"lambda"}
    for stack in with_alarms:
        assert Resolver(templates, {stack: {"EnvironmentName": "prod"}}).refusals(stack)


def test_functions_need_no_concurrency_quota_and_their_connections_stay_capped(templates):
    """A new account's concurrency quota (10) leaves nothing to reserve: Lambda keeps 100
    unreserved. The event source's MaximumConcurrency caps the connections instead."""
    for reserved, expected in (("false", (None, None)), ("true", (5, 1))):
        resolver = Resolver(templates, {"lambda": {"ReservedConcurrency": reserved}})
        resources = resolver.active("lambda")
        props = {n: resolver.resolve("lambda", r["Properties"]) for n, r in resources.items()}
        assert (
            props["StockEventsFunction"].get("ReservedConcurrentExecutions"),
            props["ReportFunction"].get("ReservedConcurrentExecutions"),
        ) == expected
        cap = props["StockEventsSource"]["ScalingConfig"]["MaximumConcurrency"]
        assert cap == 5
        if reserved == "true":
            # Never fewer reserved instances than pollers: throttled batches go back
            # to the queue, towards the dead-letter queue.
            assert props["StockEventsFunction"]["ReservedConcurrentExecutions"] == cap
    param = templates["lambda"]["Parameters"]["StockEventsMaxConcurrency"]
    assert param["MinValue"] == 2  # what SQS event sources accept
