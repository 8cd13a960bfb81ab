# Offline: a mocked provider with fixed account, partition and region, so the
# exact rds-db:connect ARN can be asserted. Run by `make tf-test`.

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

variables {
  aws_region          = "eu-west-1"
  cluster_resource_id = "cluster-ABCDEFGHIJKLMNOPQRSTUVWXY0"
  master_secret_arn   = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:dataaccess/dev/aurora-master-AbCdEf"
  kms_key_arn         = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
  ecr_repository_arn  = "arn:aws:ecr:eu-west-1:111122223333:repository/dataaccess-dev/api"
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
  # user's ARN (or, in report_db_connect only, the reader's), and nothing may
  # grant the "*" action.
  assert {
    condition = alltrue(flatten([
      for name, doc in output.policy_documents : [
        for s in jsondecode(doc).Statement : (
          !anytrue([for a in flatten([s.Action]) : a == "*" || a == "rds-db:*"])
          && (
            !anytrue([for a in flatten([s.Action]) : startswith(a, "rds-db:")])
            || (flatten([s.Action]) == ["rds-db:connect"] && flatten([s.Resource]) == [name == "report_db_connect" ? output.rds_db_reader_arn : output.rds_db_user_arn])
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
