"""The CloudFormation templates have the properties the design asks for."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.infra.conftest import CFN_DIR, Resolver


def resources(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


# The secret the secrets stack generated before RDS managed the master password.
OLD_SECRET = (
    "arn:aws:secretsmanager:eu-west-1:111122223333:secret:dataaccess/dev/aurora-master-AbCdEf"
)


def only(template: dict[str, Any], type_: str) -> dict[str, Any]:
    (found,) = resources(template, type_).values()
    return found


def app_containers(task: dict[str, Any]) -> list[dict[str, Any]]:
    """The task's own containers, not an optional sidecar (an Fn::If item)."""
    return [c for c in task["ContainerDefinitions"] if "Name" in c]


def imports(node: Any, export_suffix: str) -> bool:
    """Whether node is ImportValue of ${ProjectName}-${EnvironmentName}-<suffix>."""
    return node == {
        "Fn::ImportValue": {"Fn::Sub": f"${{ProjectName}}-${{EnvironmentName}}-{export_suffix}"}
    }


# --- Aurora ---------------------------------------------------------------------


def test_cluster_is_serverless_v2_postgres_16_with_iam_auth(templates, resolver: Resolver):
    cluster = only(templates["aurora"], "AWS::RDS::DBCluster")
    props = resolver.resolve("aurora", cluster["Properties"])
    assert props["Engine"] == "aurora-postgresql"
    assert str(props["EngineVersion"]).startswith("16.")
    assert props["EnableIAMDatabaseAuthentication"] is True
    # No auto-pause by default: SecondsUntilAutoPause is there only with MinCapacity 0.
    assert props["ServerlessV2ScalingConfiguration"] == {"MinCapacity": 0.5, "MaxCapacity": 1}
    scaling = cluster["Properties"]["ServerlessV2ScalingConfiguration"]
    assert scaling["MinCapacity"] == {"Ref": "MinCapacity"}
    assert scaling["MaxCapacity"] == {"Ref": "MaxCapacity"}


def test_cluster_is_encrypted_with_the_project_cmk(templates):
    props = only(templates["aurora"], "AWS::RDS::DBCluster")["Properties"]
    assert props["StorageEncrypted"] is True
    assert imports(props["KmsKeyId"], "KmsKeyArn")
    key = templates["secrets"]["Outputs"]["KmsKeyArn"]["Value"]
    assert key == {"Fn::GetAtt": ["DataKey", "Arn"]}
    data_key = templates["secrets"]["Resources"]["DataKey"]
    assert data_key["Type"] == "AWS::KMS::Key"
    assert data_key["Properties"]["EnableKeyRotation"] is True
    assert data_key["DeletionPolicy"] == "Retain"


def test_cluster_survives_deletion_and_keeps_a_week_of_backups(templates, resolver):
    cluster = only(templates["aurora"], "AWS::RDS::DBCluster")
    assert cluster["DeletionPolicy"] == "Snapshot"
    assert cluster["UpdateReplacePolicy"] == "Snapshot"
    props = resolver.resolve("aurora", cluster["Properties"])
    assert props["DeletionProtection"] is True
    assert props["BackupRetentionPeriod"] == 7


def test_cluster_forces_tls(templates):
    aurora = templates["aurora"]
    (name, group) = next(iter(resources(aurora, "AWS::RDS::DBClusterParameterGroup").items()))
    assert group["Properties"]["Parameters"]["rds.force_ssl"] == "1"
    assert group["Properties"]["Family"] == "aurora-postgresql16"
    cluster = only(aurora, "AWS::RDS::DBCluster")["Properties"]
    assert cluster["DBClusterParameterGroupName"] == {"Ref": name}


def test_writer_and_reader_are_private_serverless_instances(templates):
    instances = resources(templates["aurora"], "AWS::RDS::DBInstance")
    assert len(instances) == 2
    tiers = set()
    for instance in instances.values():
        props = instance["Properties"]
        assert props["DBInstanceClass"] == "db.serverless"
        assert props["DBClusterIdentifier"] == {"Ref": "Cluster"}
        assert props["PubliclyAccessible"] is False
        tiers.add(props["PromotionTier"])
    assert tiers == {0, 1}


def test_cluster_lives_in_private_subnets_behind_the_database_group(templates):
    aurora = templates["aurora"]
    subnets = only(aurora, "AWS::RDS::DBSubnetGroup")["Properties"]["SubnetIds"]
    assert subnets["Fn::Split"][0] == ","
    assert imports(subnets["Fn::Split"][1], "PrivateSubnetIds")
    cluster = only(aurora, "AWS::RDS::DBCluster")["Properties"]
    (group,) = cluster["VpcSecurityGroupIds"]
    assert imports(group, "DatabaseSecurityGroupId")


def test_database_admits_5432_only_from_the_api_lambda_and_proxy_groups(templates):
    network = templates["network"]
    db_group = network["Resources"]["DatabaseSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in db_group, "inline rules would bypass this check"
    rules = [
        r["Properties"]
        for r in resources(network, "AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == {"Ref": "DatabaseSecurityGroup"}
    ]
    assert {str(r["SourceSecurityGroupId"]["Ref"]) for r in rules} == {
        "ApiSecurityGroup",
        "LambdaSecurityGroup",
        "ProxySecurityGroup",
    }
    for rule in rules:
        assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 5432, 5432)
        assert not {"CidrIp", "CidrIpv6", "SourcePrefixListId"} & set(rule)
    # No other template adds ingress to the database group.
    for stack, template in templates.items():
        if stack != "network":
            assert not resources(template, "AWS::EC2::SecurityGroupIngress"), stack


# --- Secrets --------------------------------------------------------------------


def test_master_password_is_rds_managed_and_encrypted_with_the_project_key(templates, resolver):
    cluster = only(templates["aurora"], "AWS::RDS::DBCluster")["Properties"]
    assert cluster["ManageMasterUserPassword"] is True
    assert imports(cluster["MasterUserSecret"]["KmsKeyId"], "KmsKeyArn")
    assert "MasterUserPassword" not in cluster
    # No stack creates, attaches or rotates a secret of its own any more.
    for template in templates.values():
        for type_ in (
            "AWS::SecretsManager::Secret",
            "AWS::SecretsManager::SecretTargetAttachment",
            "AWS::SecretsManager::RotationSchedule",
        ):
            assert not resources(template, type_), type_
    output = templates["aurora"]["Outputs"]["MasterUserSecretArn"]
    assert output["Value"] == {"Fn::GetAtt": ["Cluster", "MasterUserSecret.SecretArn"]}
    assert "MasterUserSecretArn" in resolver.resolve("aurora", output["Export"]["Name"])


def test_cluster_master_user_is_a_parameter_or_an_old_clusters_own(templates, resolver):
    props = resolver.resolve(
        "aurora", only(templates["aurora"], "AWS::RDS::DBCluster")["Properties"]
    )
    assert props["MasterUsername"] == "dbadmin"
    legacy = Resolver(
        templates,
        {
            "aurora": {
                "LegacyClusterIdentifier": "dataaccess-dev-aurora-cluster-1a2b3c4d5e6f",
                "LegacyMasterSecretArn": OLD_SECRET,
            }
        },
    )
    cluster = legacy.resolve(
        "aurora", only(templates["aurora"], "AWS::RDS::DBCluster")["Properties"]
    )
    # Exactly the text the old template resolved to: a changed MasterUsername
    # replaces the cluster.
    assert (
        cluster["MasterUsername"]
        == f"{{{{resolve:secretsmanager:{OLD_SECRET}:SecretString:username}}}}"
    )
    assert "DBClusterIdentifier" not in cluster


# --- ECS ------------------------------------------------------------------------


def test_api_tasks_run_in_private_subnets_without_public_ips(templates):
    service = only(templates["ecs-api"], "AWS::ECS::Service")["Properties"]
    vpc = service["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert vpc["AssignPublicIp"] == "DISABLED"
    assert imports(vpc["Subnets"]["Fn::Split"][1], "PrivateSubnetIds")
    assert [imports(g, "ApiSecurityGroupId") for g in vpc["SecurityGroups"]] == [True]
    assert service["LaunchType"] == "FARGATE"


def test_https_listener_uses_tls_1_2_or_newer_and_http_redirects(templates):
    listeners = resources(templates["ecs-api"], "AWS::ElasticLoadBalancingV2::Listener").values()
    by_port = {lst["Properties"]["Port"]: lst["Properties"] for lst in listeners}
    assert set(by_port) == {80, 443}
    https = by_port[443]
    assert https["Protocol"] == "HTTPS"
    assert https["SslPolicy"].startswith(
        ("ELBSecurityPolicy-TLS13-1-2-", "ELBSecurityPolicy-TLS-1-2")
    )
    assert https["Certificates"] == [{"CertificateArn": {"Ref": "CertificateArn"}}]
    (redirect,) = by_port[80]["DefaultActions"]
    assert redirect["Type"] == "redirect"
    assert redirect["RedirectConfig"]["Protocol"] == "HTTPS"
    assert redirect["RedirectConfig"]["Port"] == "443"
    assert redirect["RedirectConfig"]["StatusCode"] == "HTTP_301"


def test_health_checks_liveness_in_container_readiness_at_the_target_group(templates, resolver):
    api = templates["ecs-api"]
    group = only(api, "AWS::ElasticLoadBalancingV2::TargetGroup")["Properties"]
    # Readiness by default; /healthz only for a cluster that may auto-pause (deploy.sh).
    assert resolver.resolve("ecs-api", group["HealthCheckPath"]) == "/readyz"
    assert api["Parameters"]["HealthCheckPath"]["AllowedValues"] == ["/readyz", "/healthz"]
    assert group["TargetType"] == "ip"
    task = only(api, "AWS::ECS::TaskDefinition")["Properties"]
    (container,) = app_containers(task)
    command = resolver.resolve("ecs-api", container["HealthCheck"]["Command"])
    assert command[0] == "CMD-SHELL"
    assert "http://127.0.0.1:8000/healthz" in command[1]


def test_api_task_has_separate_task_and_execution_roles_and_logs(templates):
    api = templates["ecs-api"]
    task = only(api, "AWS::ECS::TaskDefinition")["Properties"]
    assert task["TaskRoleArn"] == {"Ref": "TaskRoleArn"}
    assert task["ExecutionRoleArn"] == {"Ref": "ExecutionRoleArn"}
    assert task["RequiresCompatibilities"] == ["FARGATE"]
    (container,) = app_containers(task)
    logging = container["LogConfiguration"]
    assert logging["LogDriver"] == "awslogs"
    assert logging["Options"]["awslogs-group"] == {"Ref": "LogGroup"}
    assert "RetentionInDays" in api["Resources"]["LogGroup"]["Properties"]
    assert "Secrets" not in container, "the API authenticates with IAM, not secrets"


def test_api_scales_on_cpu(templates):
    api = templates["ecs-api"]
    policy = only(api, "AWS::ApplicationAutoScaling::ScalingPolicy")["Properties"]
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    metric = config["PredefinedMetricSpecification"]["PredefinedMetricType"]
    assert metric == "ECSServiceAverageCPUUtilization"
    target = only(api, "AWS::ApplicationAutoScaling::ScalableTarget")["Properties"]
    assert target["ScalableDimension"] == "ecs:service:DesiredCount"


def test_migration_task_runs_alembic_with_the_injected_rds_managed_secret(templates, resolver):
    migration = templates["migration"]
    task = only(migration, "AWS::ECS::TaskDefinition")["Properties"]
    assert task["ExecutionRoleArn"] == {"Ref": "MigrationExecutionRoleArn"}
    assert "TaskRoleArn" not in task
    (container,) = app_containers(task)
    assert container["Command"] == ["alembic", "upgrade", "head"]
    # Same image parameter as the service: the deploy passes one URI to both.
    assert container["Image"] == {"Ref": "ImageUri"}
    api_task = only(templates["ecs-api"], "AWS::ECS::TaskDefinition")["Properties"]
    assert api_task["ContainerDefinitions"][0]["Image"] == {"Ref": "ImageUri"}
    secrets = {s["Name"]: s["ValueFrom"]["Fn::Sub"] for s in container["Secrets"]}
    assert set(secrets) == {"DB_USER", "DB_PASSWORD"}
    for name, field in (("DB_USER", "username"), ("DB_PASSWORD", "password")):
        text, variables = secrets[name]
        assert text == f"${{SecretArn}}:{field}::"
        # The RDS-managed secret has exactly these two keys, username and password.
        assert imports(variables["SecretArn"], "MasterUserSecretArn")
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env["DB_AUTH"] == "password"
    assert imports(env["DB_IAM_USER"], "IamDbUser")
    assert migration["Outputs"]["ContainerName"]["Value"] == container["Name"]


def test_the_api_image_carries_what_the_migration_task_runs():
    """The migration task runs `alembic upgrade head` in the API image: it must hold Alembic."""
    api = CFN_DIR.parent / "api"
    dockerfile = (api / "Dockerfile").read_text()
    for path in ("alembic.ini", "alembic/"):
        assert re.search(rf"^COPY {re.escape(path)} ", dockerfile, re.MULTILINE), path
        assert f"!{path}" in (api / "Dockerfile.dockerignore").read_text().splitlines()


# --- Lambda ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "handler"),
    [
        ("StockEventsFunction", "handler.stock_events_handler"),
        ("ReportFunction", "handler.report_handler"),
    ],
)
def test_functions_run_in_the_vpc_on_a_current_python(templates, resolver, function, handler):
    template = templates["lambda"]
    props = template["Resources"][function]["Properties"]
    assert props["Handler"] == handler
    runtime = template["Parameters"]["Runtime"]
    assert props["Runtime"] == {"Ref": "Runtime"}
    assert set(runtime["AllowedValues"]) <= {"python3.12", "python3.13"}
    assert runtime["Default"] in runtime["AllowedValues"]
    assert imports(props["VpcConfig"]["SubnetIds"]["Fn::Split"][1], "PrivateSubnetIds")
    assert [
        imports(g, "LambdaSecurityGroupId") for g in props["VpcConfig"]["SecurityGroupIds"]
    ] == [True]
    # Unreserved unless ReservedConcurrency asks: a new account has no quota to reserve.
    assert "ReservedConcurrentExecutions" not in resolver.resolve("lambda", props)
    log_group = template["Resources"][props["LoggingConfig"]["LogGroup"]["Ref"]]["Properties"]
    assert log_group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    name = resolver.resolve("lambda", props["FunctionName"])
    assert resolver.resolve("lambda", log_group["LogGroupName"]) == f"/aws/lambda/{name}"


def test_stock_events_consume_sqs_with_partial_batch_responses_and_a_dlq(templates, resolver):
    template = templates["lambda"]
    mapping = only(template, "AWS::Lambda::EventSourceMapping")["Properties"]
    # Through the alias live, on the published version (tests/infra/test_snapstart.py).
    assert mapping["FunctionName"] == {"Ref": "StockEventsLiveAlias"}
    alias = template["Resources"]["StockEventsLiveAlias"]["Properties"]
    assert alias["FunctionName"] == {"Ref": "StockEventsFunction"}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue_name = mapping["EventSourceArn"]["Fn::GetAtt"][0]
    queue = template["Resources"][queue_name]["Properties"]
    dlq = queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    assert template["Resources"][dlq]["Type"] == "AWS::SQS::Queue"
    assert queue["RedrivePolicy"]["maxReceiveCount"] >= 1
    timeout = template["Resources"]["StockEventsFunction"]["Properties"]["Timeout"]
    assert queue["VisibilityTimeout"] >= 6 * timeout
    # Terraform scopes the SQS permissions to this exact name.
    assert resolver.resolve("lambda", queue["QueueName"]) == "dataaccess-dev-stock-events"


def test_report_runs_on_a_schedule(templates):
    template = templates["lambda"]
    rule = only(template, "AWS::Events::Rule")["Properties"]
    assert rule["ScheduleExpression"] == {"Ref": "ReportSchedule"}
    assert rule["Targets"][0]["Arn"] == {"Ref": "ReportLiveAlias"}
    alias = template["Resources"]["ReportLiveAlias"]["Properties"]
    assert alias["FunctionName"] == {"Ref": "ReportFunction"}
    permission = only(template, "AWS::Lambda::Permission")["Properties"]
    assert permission["Principal"] == "events.amazonaws.com"
    assert permission["FunctionName"] == {"Ref": "ReportLiveAlias"}


def test_every_function_has_an_error_alarm(templates):
    template = templates["lambda"]
    alarmed = {
        a["Properties"]["Dimensions"][0]["Value"]["Ref"]
        for a in resources(template, "AWS::CloudWatch::Alarm").values()
        if a["Properties"]["MetricName"] == "Errors"
        and a["Properties"]["Namespace"] == "AWS/Lambda"
    }
    assert alarmed == set(resources(template, "AWS::Lambda::Function"))


# --- Across stacks --------------------------------------------------------------


def test_every_import_has_an_export(templates, resolver):
    imported: set[str] = set()

    def walk(stack: str, node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {"Fn::ImportValue"}:
                imported.add(resolver.resolve(stack, node["Fn::ImportValue"]))
            for value in node.values():
                walk(stack, value)
        elif isinstance(node, list):
            for value in node:
                walk(stack, value)

    for stack, template in templates.items():
        walk(stack, template["Resources"])
    assert imported, "no stack imports anything"
    assert imported <= set(resolver.exports), imported - set(resolver.exports)


def test_no_template_holds_an_account_id():
    for path in sorted(CFN_DIR.glob("*.yaml")):
        assert not re.search(r"(?<![\d.])\d{12}(?!\d)", path.read_text()), path.name


def test_no_security_group_keeps_the_default_allow_all_egress(templates):
    groups = resources(templates["network"], "AWS::EC2::SecurityGroup")
    # ALB, API, Lambda, proxy, database, and the VPC endpoints' (PrivateEgress=endpoints).
    assert len(groups) == 6
    for stack, template in templates.items():
        assert stack == "network" or not resources(template, "AWS::EC2::SecurityGroup"), stack
    for name, group in groups.items():
        egress = group["Properties"].get("SecurityGroupEgress")
        assert egress, f"{name} would keep the default allow-all egress"
        assert all(rule.get("CidrIp") != "0.0.0.0/0" or rule["FromPort"] == 443 for rule in egress)
