# Offline: a mocked provider with fixed account, partition and region, so the
# exact rds-db:connect ARNs (cluster and RDS Proxy) can be asserted. Run by
# `make tf-test`.

mock_provider "aws" {
  override_data {
    target = data.aws_caller_identity.current
    values = { account_id = "111122223333" }
  }
  override_data {
    target = data.aws_partition.current
    values = { partition = "aws" }
  }
  override_data {
    target = data.aws_region.current
    values = { name = "eu-west-1" }
  }
  # Mocked ARNs are random strings otherwise, which attachments reject.
  mock_resource "aws_iam_policy" {
    defaults = { arn = "arn:aws:iam::111122223333:policy/mock" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::111122223333:role/mock" }
  }
}

# Distinct ARNs for the two connect policies, so attachments can be told apart.
override_resource {
  target = aws_iam_policy.db_connect
  values = { arn = "arn:aws:iam::111122223333:policy/dataaccess-dev-db-connect" }
}

override_resource {
  target = aws_iam_policy.report_db_connect
  values = { arn = "arn:aws:iam::111122223333:policy/dataaccess-dev-report-db-connect" }
}

override_resource {
  target = aws_iam_policy.proxy_db_connect
  values = { arn = "arn:aws:iam::111122223333:policy/dataaccess-dev-proxy-db-connect" }
}

override_resource {
  target = aws_iam_policy.report_proxy_db_connect
  values = { arn = "arn:aws:iam::111122223333:policy/dataaccess-dev-report-proxy-db-connect" }
}

variables {
  aws_region          = "eu-west-1"
  cluster_resource_id = "cluster-ABCDEFGHIJKLMNOPQRSTUVWXY0"
  # What RDS names the secret it manages for the cluster (aurora MasterUserSecretArn).
  master_secret_arn  = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:rds!cluster-0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d-AbCdEf"
  kms_key_arn        = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
  ecr_repository_arn = "arn:aws:ecr:eu-west-1:111122223333:repository/dataaccess-dev/api"
}

run "db_connect_is_exactly_one_db_user_on_one_cluster" {
  command = apply

  assert {
    condition     = output.rds_db_user_arn == "arn:aws:rds-db:eu-west-1:111122223333:dbuser:cluster-ABCDEFGHIJKLMNOPQRSTUVWXY0/app_iam"
    error_message = "rds_db_user_arn is ${output.rds_db_user_arn}"
  }

  assert {
    condition = jsondecode(aws_iam_policy.db_connect.policy).Statement == [{
      Sid      = "ConnectAsTheIamDatabaseUserOnly"
      Effect   = "Allow"
      Action   = "rds-db:connect"
      Resource = "arn:aws:rds-db:eu-west-1:111122223333:dbuser:cluster-ABCDEFGHIJKLMNOPQRSTUVWXY0/app_iam"
    }]
    error_message = "db_connect must allow exactly rds-db:connect on exactly the app_iam dbuser ARN"
  }

  # Any statement that mentions rds-db must be exactly connect on the app
  # user's ARN (or, in report_db_connect only, the reader's; in db_operator
  # only, the operator's), and nothing may grant the "*" action.
  assert {
    condition = alltrue(flatten([
      for name, doc in output.policy_documents : [
        for s in jsondecode(doc).Statement : (
          !anytrue([for a in flatten([s.Action]) : a == "*" || a == "rds-db:*"])
          && (
            !anytrue([for a in flatten([s.Action]) : startswith(a, "rds-db:")])
            || (flatten([s.Action]) == ["rds-db:connect"] && flatten([s.Resource]) == [lookup({ report_db_connect = output.rds_db_reader_arn, db_operator = output.rds_db_operator_arn }, name, output.rds_db_user_arn)])
          )
        )
      ]
    ]))
    error_message = "a policy grants rds-db beyond connect on its one dbuser ARN, or grants *"
  }

  assert {
    condition     = length(output.policy_documents) == 6
    error_message = "policy_documents must list every policy the module creates"
  }

  assert {
    condition = toset([
      aws_iam_role_policy_attachment.api_task_db_connect.role,
      aws_iam_role_policy_attachment.stock_events_db_connect.role,
      aws_iam_role_policy_attachment.report_db_connect.role,
    ]) == toset([aws_iam_role.api_task.name, aws_iam_role.stock_events.name, aws_iam_role.report.name])
    error_message = "the API task role and both Lambda roles must hold an rds-db:connect policy"
  }

  assert {
    condition     = aws_iam_group_policy_attachment.token_auth_db_connect[0].group == aws_iam_group.token_auth[0].name && aws_iam_group_membership.token_auth[0].users == toset([aws_iam_user.token_auth[0].name])
    error_message = "the token-auth user must get rds-db:connect through its group"
  }

  # The master secret is readable by the migration execution role only.
  assert {
    condition = alltrue(flatten([
      for name, doc in output.policy_documents : [
        for s in jsondecode(doc).Statement :
        name == "migration_execution" || !anytrue([for a in flatten([s.Action]) : startswith(a, "secretsmanager:")])
      ]
    ]))
    error_message = "only migration_execution may use Secrets Manager"
  }

  assert {
    condition = contains([
      for s in jsondecode(output.policy_documents.migration_execution).Statement : s.Resource if s.Action == "secretsmanager:GetSecretValue"
    ], var.master_secret_arn)
    error_message = "the migration execution role must read exactly the master secret"
  }

  assert {
    condition     = !strcontains(aws_iam_role.api_execution.name, "migration") && !strcontains(output.policy_documents.api_execution, "secretsmanager")
    error_message = "the API execution role must not read secrets"
  }
}

# Tracing (the functions' TracingConfig, the API's X-Ray daemon) needs the
# roles to write segments; nothing else gets the managed policy.
run "tracing_roles_may_write_traces_only" {
  command = plan

  assert {
    condition = (
      toset([for a in aws_iam_role_policy_attachment.xray_write : a.role]) == toset([aws_iam_role.stock_events.name, aws_iam_role.report.name, aws_iam_role.api_task.name])
      && toset([for a in aws_iam_role_policy_attachment.xray_write : a.policy_arn]) == toset(["arn:aws:iam::aws:policy/AWSXRayDaemonWriteAccess"])
    )
    error_message = "both functions and the API task role (and only they) hold AWSXRayDaemonWriteAccess"
  }
}

run "master_user_never_gets_an_iam_login" {
  command = plan

  variables {
    db_iam_user = "dbadmin"
  }

  expect_failures = [var.db_iam_user]
}

run "wildcard_db_user_is_rejected" {
  command = plan

  variables {
    db_iam_user = "*"
  }

  expect_failures = [var.db_iam_user]
}

run "wildcard_cluster_is_rejected" {
  command = plan

  variables {
    cluster_resource_id = "*"
  }

  expect_failures = [var.cluster_resource_id]
}

run "token_auth_user_is_optional" {
  command = plan

  variables {
    create_token_auth_user = false
  }

  assert {
    condition     = length(aws_iam_user.token_auth) == 0 && output.token_auth_user_name == null
    error_message = "create_token_auth_user = false must create no IAM user"
  }
}

run "report_connects_as_the_read_only_user_only" {
  command = apply

  assert {
    condition     = output.rds_db_reader_arn == "arn:aws:rds-db:eu-west-1:111122223333:dbuser:cluster-ABCDEFGHIJKLMNOPQRSTUVWXY0/app_reader"
    error_message = "rds_db_reader_arn is ${output.rds_db_reader_arn}"
  }

  assert {
    condition = jsondecode(aws_iam_policy.report_db_connect.policy).Statement == [{
      Sid      = "ConnectAsTheReadOnlyDatabaseUserOnly"
      Effect   = "Allow"
      Action   = "rds-db:connect"
      Resource = "arn:aws:rds-db:eu-west-1:111122223333:dbuser:cluster-ABCDEFGHIJKLMNOPQRSTUVWXY0/app_reader"
    }]
    error_message = "report_db_connect must allow exactly rds-db:connect on exactly the app_reader dbuser ARN"
  }

  # The report role's only rds-db:connect is the reader's: not the app user's.
  assert {
    condition = (
      aws_iam_role_policy_attachment.report_db_connect.role == aws_iam_role.report.name
      && aws_iam_role_policy_attachment.report_db_connect.policy_arn == aws_iam_policy.report_db_connect.arn
      && aws_iam_role_policy_attachment.report_db_connect.policy_arn != aws_iam_policy.db_connect.arn
    )
    error_message = "the report role must hold report_db_connect, not db_connect"
  }

  assert {
    condition     = !strcontains(aws_iam_policy.report_db_connect.policy, "/app_iam") && !strcontains(output.policy_documents.report, "rds-db")
    error_message = "nothing the report role holds may name the app user's dbuser ARN"
  }

  assert {
    condition = length([
      for a in [
        aws_iam_role_policy_attachment.api_task_db_connect,
        aws_iam_role_policy_attachment.stock_events_db_connect,
        aws_iam_role_policy_attachment.report_db_connect,
      ] : a if a.policy_arn == aws_iam_policy.report_db_connect.arn
    ]) == 1
    error_message = "only the report role may hold report_db_connect"
  }

  # stock-events (and the API) still write as the app user, as before.
  assert {
    condition = (
      aws_iam_role_policy_attachment.stock_events_db_connect.role == aws_iam_role.stock_events.name
      && aws_iam_role_policy_attachment.stock_events_db_connect.policy_arn == aws_iam_policy.db_connect.arn
      && aws_iam_role_policy_attachment.api_task_db_connect.policy_arn == aws_iam_policy.db_connect.arn
      && jsondecode(aws_iam_policy.db_connect.policy).Statement[0].Resource == "arn:aws:rds-db:eu-west-1:111122223333:dbuser:cluster-ABCDEFGHIJKLMNOPQRSTUVWXY0/app_iam"
    )
    error_message = "the stock-events role and the API task role must keep db_connect on app_iam"
  }
}

run "reader_user_follows_its_variable" {
  command = plan

  variables {
    db_reader_user = "report_ro"
  }

  assert {
    condition     = output.rds_db_reader_arn == "arn:aws:rds-db:eu-west-1:111122223333:dbuser:cluster-ABCDEFGHIJKLMNOPQRSTUVWXY0/report_ro"
    error_message = "rds_db_reader_arn is ${output.rds_db_reader_arn}"
  }
}

run "reader_user_must_not_be_the_app_user" {
  command = plan

  variables {
    db_reader_user = "app_iam"
  }

  expect_failures = [var.db_reader_user]
}

run "reader_user_must_not_be_the_master_user" {
  command = plan

  variables {
    db_reader_user = "dbadmin"
  }

  expect_failures = [var.db_reader_user]
}

run "wildcard_reader_user_is_rejected" {
  command = plan

  variables {
    db_reader_user = "*"
  }

  expect_failures = [var.db_reader_user]
}

# --- RDS Proxy: exact grants with and without it ---------------------------------

run "without_a_proxy_nothing_names_one" {
  command = apply

  assert {
    condition = (
      !strcontains(jsonencode(output.policy_documents), "prx-")
      && length(aws_iam_role.rds_proxy) == 0
      && length(aws_iam_policy.proxy_db_connect) == 0
      && length(aws_iam_policy.report_proxy_db_connect) == 0
      && output.rds_proxy_role_arn == null
      && output.rds_db_proxy_user_arn == null
      && output.rds_db_proxy_reader_arn == null
    )
    error_message = "with no proxy, no policy may name one and no proxy role may exist"
  }

  assert {
    condition     = toset(keys(output.policy_documents)) == toset(["api_execution", "db_connect", "migration_execution", "report", "report_db_connect", "stock_events"])
    error_message = "without a proxy the module creates exactly the six base policies"
  }
}

# --- Master secret: RDS-managed -----------------------------------------------------

run "master_secret_arn_is_the_rds_managed_secret_and_nothing_wider" {
  command = plan

  variables {
    master_secret_arn = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:*"
  }

  expect_failures = [var.master_secret_arn]
}

run "migration_reads_exactly_the_rds_managed_secret" {
  command = apply

  assert {
    condition = [
      for s in jsondecode(output.policy_documents.migration_execution).Statement : s.Resource if s.Action == "secretsmanager:GetSecretValue"
    ] == ["arn:aws:secretsmanager:eu-west-1:111122223333:secret:rds!cluster-0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d-AbCdEf"]
    error_message = "the migration execution role reads the RDS-managed secret, exactly"
  }
}

# --- Operators: their own login, through the API tasks only ------------------------

run "operator_access_is_off_by_default" {
  command = apply

  assert {
    condition = (
      length(aws_iam_group.db_operator) == 0
      && length(aws_iam_role_policy.api_task_operator_access) == 0
      && output.db_operator_group_name == null
      && !strcontains(jsonencode(output.policy_documents), "app_operator")
      && !strcontains(jsonencode(output.policy_documents), "ssm")
    )
    error_message = "without enable_operator_access no operator group, login or ECS Exec permission exists"
  }
}

run "operators_connect_as_the_operator_through_the_api_tasks_only" {
  command = apply

  variables {
    enable_operator_access = true
  }

  assert {
    condition     = output.rds_db_operator_arn == "arn:aws:rds-db:eu-west-1:111122223333:dbuser:cluster-ABCDEFGHIJKLMNOPQRSTUVWXY0/app_operator"
    error_message = "rds_db_operator_arn is ${output.rds_db_operator_arn}"
  }

  assert {
    condition = jsondecode(output.policy_documents.db_operator).Statement == [
      {
        Sid      = "ConnectAsTheOperatorDatabaseUserOnly"
        Effect   = "Allow"
        Action   = "rds-db:connect"
        Resource = "arn:aws:rds-db:eu-west-1:111122223333:dbuser:cluster-ABCDEFGHIJKLMNOPQRSTUVWXY0/app_operator"
      },
      {
        Sid      = "PortForwardThroughTheApiTasksOnly"
        Effect   = "Allow"
        Action   = "ssm:StartSession"
        Resource = ["arn:aws:ecs:eu-west-1:111122223333:task/dataaccess-dev/*", "arn:aws:ssm:eu-west-1::document/AWS-StartPortForwardingSessionToRemoteHost"]
        Condition = {
          BoolIfExists = { "ssm:SessionDocumentAccessCheck" = "true" }
        }
      },
      {
        Sid      = "EndOwnSessions"
        Effect   = "Allow"
        Action   = ["ssm:TerminateSession", "ssm:ResumeSession"]
        Resource = "arn:aws:ssm:eu-west-1:111122223333:session/$${aws:username}-*"
      },
      {
        Sid      = "FindTheApiTasks"
        Effect   = "Allow"
        Action   = "ecs:DescribeTasks"
        Resource = "arn:aws:ecs:eu-west-1:111122223333:task/dataaccess-dev/*"
      },
      {
        Sid       = "ListTheApiTasks"
        Effect    = "Allow"
        Action    = "ecs:ListTasks"
        Resource  = "*"
        Condition = { ArnEquals = { "ecs:cluster" = "arn:aws:ecs:eu-west-1:111122223333:cluster/dataaccess-dev" } }
      },
    ]
    error_message = "the operator group may connect as app_operator and port-forward through the cluster's tasks with that one document, nothing else"
  }

  assert {
    condition = (
      aws_iam_group.db_operator[0].name == "dataaccess-dev-db-operator"
      && aws_iam_group_policy.db_operator[0].group == aws_iam_group.db_operator[0].name
      && output.db_operator_group_name == "dataaccess-dev-db-operator"
    )
    error_message = "the operator group is <prefix>-db-operator and holds the operator policy"
  }

  assert {
    condition = jsondecode(output.policy_documents.api_task_operator_access).Statement == [
      {
        Sid      = "OpenEcsExecChannels"
        Effect   = "Allow"
        Action   = ["ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel", "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel"]
        Resource = "*"
      },
      {
        Sid      = "FindTheSessionLog"
        Effect   = "Allow"
        Action   = "logs:DescribeLogGroups"
        Resource = "*"
      },
      {
        Sid      = "WriteTheSessionLog"
        Effect   = "Allow"
        Action   = ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"]
        Resource = "arn:aws:logs:eu-west-1:111122223333:log-group:/ecs/dataaccess-dev/exec:*"
      },
    ]
    error_message = "the API task role gets exactly ECS Exec's channels and the session log"
  }

  assert {
    condition     = aws_iam_role_policy.api_task_operator_access[0].role == aws_iam_role.api_task.id
    error_message = "the ECS Exec permissions belong to the API task role"
  }

  # The operator login is the operator group's alone: no role holds it, and the
  # operator group holds no other database login.
  assert {
    condition = (
      length([for name, doc in output.policy_documents : name if strcontains(doc, "/app_operator")]) == 1
      && !strcontains(output.policy_documents.db_operator, "/app_iam")
      && !strcontains(output.policy_documents.db_operator, "/app_reader")
      && length(output.policy_documents) == 8
    )
    error_message = "only db_operator names the operator login, and it names no other"
  }

  # The shared rds-db rule still holds with the operator policy in the map.
  assert {
    condition = alltrue(flatten([
      for name, doc in output.policy_documents : [
        for s in jsondecode(doc).Statement : (
          !anytrue([for a in flatten([s.Action]) : a == "*" || a == "rds-db:*" || a == "ssm:*" || a == "ecs:*"])
          && (
            !anytrue([for a in flatten([s.Action]) : startswith(a, "rds-db:")])
            || (flatten([s.Action]) == ["rds-db:connect"] && flatten([s.Resource]) == [lookup({ report_db_connect = output.rds_db_reader_arn, db_operator = output.rds_db_operator_arn }, name, output.rds_db_user_arn)])
          )
        )
      ]
    ]))
    error_message = "a policy grants rds-db beyond connect on its one dbuser ARN, or grants a wildcard action"
  }
}

run "operator_user_must_be_its_own_login" {
  command = plan

  variables {
    enable_operator_access = true
    db_operator_user       = "app_iam"
  }

  expect_failures = [var.db_operator_user]
}

run "operator_user_must_not_be_the_master_user" {
  command = plan

  variables {
    enable_operator_access = true
    db_operator_user       = "dbadmin"
  }

  expect_failures = [var.db_operator_user]
}

run "operator_user_must_not_be_the_reader" {
  command = plan

  variables {
    enable_operator_access = true
    db_operator_user       = "app_reader"
  }

  expect_failures = [var.db_operator_user]
}

run "wildcard_operator_user_is_rejected" {
  command = plan

  variables {
    enable_operator_access = true
    db_operator_user       = "*"
  }

  expect_failures = [var.db_operator_user]
}

# The deploy's first Terraform pass with DB_PROXY=on: the proxy stack needs the
# role before it can give the proxy's resource id.
run "proxy_role_comes_before_the_proxy" {
  command = apply

  variables {
    enable_proxy = true
  }

  assert {
    condition = jsondecode(output.policy_documents.rds_proxy).Statement == [{
      Sid      = "ProxyConnectsAsTheFunctionsDatabaseUsersOnly"
      Effect   = "Allow"
      Action   = "rds-db:connect"
      Resource = ["arn:aws:rds-db:eu-west-1:111122223333:dbuser:cluster-ABCDEFGHIJKLMNOPQRSTUVWXY0/app_iam", "arn:aws:rds-db:eu-west-1:111122223333:dbuser:cluster-ABCDEFGHIJKLMNOPQRSTUVWXY0/app_reader"]
    }]
    error_message = "the proxy's role may connect to the cluster as exactly the two function users"
  }

  assert {
    condition = jsondecode(aws_iam_role.rds_proxy[0].assume_role_policy).Statement == [{
      Effect    = "Allow"
      Principal = { Service = "rds.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = { StringEquals = { "aws:SourceAccount" = "111122223333" } }
    }]
    error_message = "only RDS, acting for this account, may assume the proxy's role"
  }

  assert {
    condition     = aws_iam_role_policy.rds_proxy[0].role == aws_iam_role.rds_proxy[0].id && output.rds_proxy_role_arn == aws_iam_role.rds_proxy[0].arn
    error_message = "the proxy's policy belongs to its role, whose ARN is output for the proxy stack"
  }

  assert {
    condition     = !strcontains(jsonencode(output.policy_documents), "prx-") && length(aws_iam_policy.proxy_db_connect) == 0
    error_message = "no grant through a proxy before its resource id is known"
  }
}

run "with_the_proxy_each_function_connects_through_it_exactly" {
  command = apply

  variables {
    enable_proxy      = true
    proxy_resource_id = "prx-0123456789abcdef0"
  }

  assert {
    condition     = output.rds_db_proxy_user_arn == "arn:aws:rds-db:eu-west-1:111122223333:dbuser:prx-0123456789abcdef0/app_iam" && output.rds_db_proxy_reader_arn == "arn:aws:rds-db:eu-west-1:111122223333:dbuser:prx-0123456789abcdef0/app_reader"
    error_message = "proxy ARNs are ${output.rds_db_proxy_user_arn} and ${output.rds_db_proxy_reader_arn}"
  }

  assert {
    condition = jsondecode(aws_iam_policy.proxy_db_connect[0].policy).Statement == [{
      Sid      = "ConnectAsTheIamDatabaseUserThroughTheProxyOnly"
      Effect   = "Allow"
      Action   = "rds-db:connect"
      Resource = "arn:aws:rds-db:eu-west-1:111122223333:dbuser:prx-0123456789abcdef0/app_iam"
    }]
    error_message = "proxy_db_connect must allow exactly rds-db:connect as app_iam through the proxy"
  }

  assert {
    condition = jsondecode(aws_iam_policy.report_proxy_db_connect[0].policy).Statement == [{
      Sid      = "ConnectAsTheReadOnlyDatabaseUserThroughTheProxyOnly"
      Effect   = "Allow"
      Action   = "rds-db:connect"
      Resource = "arn:aws:rds-db:eu-west-1:111122223333:dbuser:prx-0123456789abcdef0/app_reader"
    }]
    error_message = "report_proxy_db_connect must allow exactly rds-db:connect as app_reader through the proxy"
  }

  # Every rds-db statement of every policy, by policy: exactly these resources.
  assert {
    condition = {
      for name, doc in output.policy_documents : name => flatten([
        for s in jsondecode(doc).Statement : flatten([s.Resource])
        if anytrue([for a in flatten([s.Action]) : startswith(a, "rds-db:")])
      ]) if strcontains(doc, "rds-db")
      } == {
      db_connect              = ["arn:aws:rds-db:eu-west-1:111122223333:dbuser:cluster-ABCDEFGHIJKLMNOPQRSTUVWXY0/app_iam"]
      report_db_connect       = ["arn:aws:rds-db:eu-west-1:111122223333:dbuser:cluster-ABCDEFGHIJKLMNOPQRSTUVWXY0/app_reader"]
      proxy_db_connect        = ["arn:aws:rds-db:eu-west-1:111122223333:dbuser:prx-0123456789abcdef0/app_iam"]
      report_proxy_db_connect = ["arn:aws:rds-db:eu-west-1:111122223333:dbuser:prx-0123456789abcdef0/app_reader"]
      rds_proxy               = ["arn:aws:rds-db:eu-west-1:111122223333:dbuser:cluster-ABCDEFGHIJKLMNOPQRSTUVWXY0/app_iam", "arn:aws:rds-db:eu-west-1:111122223333:dbuser:cluster-ABCDEFGHIJKLMNOPQRSTUVWXY0/app_reader"]
    }
    error_message = "an rds-db grant names a resource other than its one exact dbuser ARN (or the proxy role's two)"
  }

  assert {
    condition = alltrue(flatten([
      for doc in values(output.policy_documents) : [
        for s in jsondecode(doc).Statement : !anytrue([for a in flatten([s.Action]) : a == "*" || a == "rds-db:*" || (startswith(a, "rds-db:") && a != "rds-db:connect")])
      ]
    ]))
    error_message = "no policy may grant *, rds-db:* or any rds-db action but connect"
  }

  # stock-events through the proxy as the IAM user, report as the reader; the
  # API task role and the token-auth group connect to the cluster only.
  assert {
    condition = (
      aws_iam_role_policy_attachment.stock_events_proxy_db_connect[0].role == aws_iam_role.stock_events.name
      && aws_iam_role_policy_attachment.stock_events_proxy_db_connect[0].policy_arn == aws_iam_policy.proxy_db_connect[0].arn
      && aws_iam_role_policy_attachment.report_proxy_db_connect[0].role == aws_iam_role.report.name
      && aws_iam_role_policy_attachment.report_proxy_db_connect[0].policy_arn == aws_iam_policy.report_proxy_db_connect[0].arn
      && aws_iam_policy.proxy_db_connect[0].arn != aws_iam_policy.report_proxy_db_connect[0].arn
    )
    error_message = "stock-events must hold proxy_db_connect and report must hold report_proxy_db_connect"
  }

  assert {
    condition = (
      aws_iam_role_policy_attachment.api_task_db_connect.policy_arn == aws_iam_policy.db_connect.arn
      && aws_iam_group_policy_attachment.token_auth_db_connect[0].policy_arn == aws_iam_policy.db_connect.arn
      && !strcontains(output.policy_documents.db_connect, "prx-")
    )
    error_message = "the API and the token-auth user keep the cluster grant only: they do not go through the proxy"
  }

  assert {
    condition     = length(output.policy_documents) == 9
    error_message = "policy_documents must list every policy, the three proxy ones included"
  }
}

run "proxy_resource_id_must_be_a_proxy_id" {
  command = plan

  variables {
    enable_proxy      = true
    proxy_resource_id = "prx-*"
  }

  expect_failures = [var.proxy_resource_id]
}

run "cluster_id_is_not_a_proxy_id" {
  command = plan

  variables {
    enable_proxy      = true
    proxy_resource_id = "cluster-ABCDEFGHIJKLMNOPQRSTUVWXY0"
  }

  expect_failures = [var.proxy_resource_id]
}

run "proxy_resource_id_needs_the_proxy_role" {
  command = plan

  variables {
    proxy_resource_id = "prx-0123456789abcdef0"
  }

  expect_failures = [var.proxy_resource_id]
}
