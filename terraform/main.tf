# IAM for dataaccess. Terraform owns every identity our own code runs as (the
# Lambda execution roles, the API task and execution roles, the migration
# execution role), every rds-db:connect grant, and the token-auth IAM user.
# CloudFormation creates no such role; it takes these ARNs as parameters. The
# RDS Proxy's role is a service role, but with end-to-end IAM authentication it
# holds rds-db:connect on the cluster, so it is here too (proxy stack parameter
# ProxyRoleArn). The service roles that touch no database stay in their stacks.
#
# Names of the queues, log groups and the ECS cluster the stacks create are fixed
# by convention (<project>-<environment>-...), so policies can name them before
# they exist.

data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}
data "aws_region" "current" {}

locals {
  prefix    = "${var.project}-${var.environment}"
  partition = data.aws_partition.current.partition
  account   = data.aws_caller_identity.current.account_id
  region    = data.aws_region.current.name

  # The one database identity IAM may log in as: one user on one cluster.
  rds_db_user_arn = "arn:${local.partition}:rds-db:${local.region}:${local.account}:dbuser:${var.cluster_resource_id}/${var.db_iam_user}"
  # The report's read-only login (migration 0006): SELECT on products and orders only.
  rds_db_reader_arn = "arn:${local.partition}:rds-db:${local.region}:${local.account}:dbuser:${var.cluster_resource_id}/${var.db_reader_user}"
  # The same two logins through the RDS Proxy: a client presents a token for the
  # proxy's resource id, the proxy then logs in to the cluster with its own role.
  has_proxy_id            = var.proxy_resource_id != ""
  rds_db_proxy_user_arn   = local.has_proxy_id ? "arn:${local.partition}:rds-db:${local.region}:${local.account}:dbuser:${var.proxy_resource_id}/${var.db_iam_user}" : null
  rds_db_proxy_reader_arn = local.has_proxy_id ? "arn:${local.partition}:rds-db:${local.region}:${local.account}:dbuser:${var.proxy_resource_id}/${var.db_reader_user}" : null

  # Operators (enable_operator_access): their own login, reached by SSM port
  # forwarding through an API task of the project's ECS cluster.
  rds_db_operator_arn          = "arn:${local.partition}:rds-db:${local.region}:${local.account}:dbuser:${var.cluster_resource_id}/${var.db_operator_user}"
  ecs_cluster_arn              = "arn:${local.partition}:ecs:${local.region}:${local.account}:cluster/${local.prefix}"
  ecs_task_arns                = "arn:${local.partition}:ecs:${local.region}:${local.account}:task/${local.prefix}/*"
  port_forwarding_document_arn = "arn:${local.partition}:ssm:${local.region}::document/AWS-StartPortForwardingSessionToRemoteHost"
  exec_log_group_arn           = "arn:${local.partition}:logs:${local.region}:${local.account}:log-group:/ecs/${local.prefix}/exec"

  stock_events_queue_arn = "arn:${local.partition}:sqs:${local.region}:${local.account}:${local.prefix}-stock-events"
  report_dlq_arn         = "arn:${local.partition}:sqs:${local.region}:${local.account}:${local.prefix}-report-dlq"
  api_log_group_arn      = "arn:${local.partition}:logs:${local.region}:${local.account}:log-group:/ecs/${local.prefix}/api"
  migration_log_arn      = "arn:${local.partition}:logs:${local.region}:${local.account}:log-group:/ecs/${local.prefix}/migration"

  ecr_pull_statements = [
    {
      Sid      = "EcrLogin"
      Effect   = "Allow"
      Action   = ["ecr:GetAuthorizationToken"]
      Resource = "*" # the action has no resource scope
    },
    {
      Sid      = "PullTheApiImage"
      Effect   = "Allow"
      Action   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
      Resource = var.ecr_repository_arn
    },
  ]

  # Every permission policy this module creates, by name. Resources below
  # take their documents only from here, so `terraform output policy_documents`
  # and the tests see all of them.
  policy_documents = {
    db_connect = jsonencode({
      Version = "2012-10-17"
      Statement = [{
        Sid      = "ConnectAsTheIamDatabaseUserOnly"
        Effect   = "Allow"
        Action   = "rds-db:connect"
        Resource = local.rds_db_user_arn
      }]
    })

    # The report function only: it reads, so it logs in as the read-only user.
    report_db_connect = jsonencode({
      Version = "2012-10-17"
      Statement = [{
        Sid      = "ConnectAsTheReadOnlyDatabaseUserOnly"
        Effect   = "Allow"
        Action   = "rds-db:connect"
        Resource = local.rds_db_reader_arn
      }]
    })

    # Only with a proxy (null otherwise, and left out of the output): the
    # functions' logins through it (the API connects to the cluster directly),
    # and the proxy's own login to the cluster.
    proxy_db_connect = local.has_proxy_id ? jsonencode({
      Version = "2012-10-17"
      Statement = [{
        Sid      = "ConnectAsTheIamDatabaseUserThroughTheProxyOnly"
        Effect   = "Allow"
        Action   = "rds-db:connect"
        Resource = local.rds_db_proxy_user_arn
      }]
    }) : null

    report_proxy_db_connect = local.has_proxy_id ? jsonencode({
      Version = "2012-10-17"
      Statement = [{
        Sid      = "ConnectAsTheReadOnlyDatabaseUserThroughTheProxyOnly"
        Effect   = "Allow"
        Action   = "rds-db:connect"
        Resource = local.rds_db_proxy_reader_arn
      }]
    }) : null

    # End-to-end IAM: the proxy logs in to the cluster as the user its client
    # presented, so it may connect as exactly the users the functions use.
    rds_proxy = var.enable_proxy ? jsonencode({
      Version = "2012-10-17"
      Statement = [{
        Sid      = "ProxyConnectsAsTheFunctionsDatabaseUsersOnly"
        Effect   = "Allow"
        Action   = "rds-db:connect"
        Resource = [local.rds_db_user_arn, local.rds_db_reader_arn]
      }]
    }) : null

    stock_events = jsonencode({
      Version = "2012-10-17"
      Statement = [
        {
          Sid      = "ConsumeStockEvents"
          Effect   = "Allow"
          Action   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"]
          Resource = local.stock_events_queue_arn
        },
        {
          Sid      = "DecryptQueueMessages"
          Effect   = "Allow"
          Action   = "kms:Decrypt"
          Resource = var.kms_key_arn
          Condition = {
            StringEquals = { "kms:ViaService" = "sqs.${local.region}.amazonaws.com" }
          }
        },
      ]
    })

    report = jsonencode({
      Version = "2012-10-17"
      Statement = [
        {
          Sid      = "DeadLetterFailedRuns"
          Effect   = "Allow"
          Action   = "sqs:SendMessage"
          Resource = local.report_dlq_arn
        },
        {
          Sid      = "EncryptDeadLetters"
          Effect   = "Allow"
          Action   = ["kms:GenerateDataKey", "kms:Decrypt"]
          Resource = var.kms_key_arn
          Condition = {
            StringEquals = { "kms:ViaService" = "sqs.${local.region}.amazonaws.com" }
          }
        },
      ]
    })

    api_execution = jsonencode({
      Version = "2012-10-17"
      Statement = concat(local.ecr_pull_statements, [{
        Sid      = "WriteApiLogs"
        Effect   = "Allow"
        Action   = ["logs:CreateLogStream", "logs:PutLogEvents"]
        Resource = "${local.api_log_group_arn}:*"
      }])
    })

    # Operators, through the group below (only with enable_operator_access):
    # log in as the operator role, over a port forward through an API task.
    db_operator = var.enable_operator_access ? jsonencode({
      Version = "2012-10-17"
      Statement = [
        {
          Sid      = "ConnectAsTheOperatorDatabaseUserOnly"
          Effect   = "Allow"
          Action   = "rds-db:connect"
          Resource = local.rds_db_operator_arn
        },
        {
          # The port-forwarding document and the cluster's tasks, nothing else;
          # the check makes a session that names no document (a shell) fail.
          Sid      = "PortForwardThroughTheApiTasksOnly"
          Effect   = "Allow"
          Action   = "ssm:StartSession"
          Resource = [local.ecs_task_arns, local.port_forwarding_document_arn]
          Condition = {
            BoolIfExists = { "ssm:SessionDocumentAccessCheck" = "true" }
          }
        },
        {
          Sid      = "EndOwnSessions"
          Effect   = "Allow"
          Action   = ["ssm:TerminateSession", "ssm:ResumeSession"]
          Resource = "arn:${local.partition}:ssm:${local.region}:${local.account}:session/$${aws:username}-*"
        },
        {
          # The task id and the container's runtime id make the session's target.
          Sid      = "FindTheApiTasks"
          Effect   = "Allow"
          Action   = "ecs:DescribeTasks"
          Resource = local.ecs_task_arns
        },
        {
          Sid      = "ListTheApiTasks"
          Effect   = "Allow"
          Action   = "ecs:ListTasks"
          Resource = "*" # scoped by the condition: ListTasks names container instances
          Condition = {
            ArnEquals = { "ecs:cluster" = local.ecs_cluster_arn }
          }
        },
      ]
    }) : null

    # The API task role's ECS Exec permissions (only with enable_operator_access):
    # the SSM agent's session channels, and the session log the cluster names.
    api_task_operator_access = var.enable_operator_access ? jsonencode({
      Version = "2012-10-17"
      Statement = [
        {
          Sid      = "OpenEcsExecChannels"
          Effect   = "Allow"
          Action   = ["ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel", "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel"]
          Resource = "*" # the actions have no resource scope
        },
        {
          Sid      = "FindTheSessionLog"
          Effect   = "Allow"
          Action   = "logs:DescribeLogGroups"
          Resource = "*" # the action has no resource scope
        },
        {
          Sid      = "WriteTheSessionLog"
          Effect   = "Allow"
          Action   = ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"]
          Resource = "${local.exec_log_group_arn}:*"
        },
      ]
    }) : null

    # The only principal that may read the master secret (RDS-managed): ECS
    # injects it into the migration container as DB_USER / DB_PASSWORD.
    migration_execution = jsonencode({
      Version = "2012-10-17"
      Statement = concat(local.ecr_pull_statements, [
        {
          Sid      = "WriteMigrationLogs"
          Effect   = "Allow"
          Action   = ["logs:CreateLogStream", "logs:PutLogEvents"]
          Resource = "${local.migration_log_arn}:*"
        },
        {
          Sid      = "ReadTheMasterSecret"
          Effect   = "Allow"
          Action   = "secretsmanager:GetSecretValue"
          Resource = var.master_secret_arn
        },
        {
          Sid      = "DecryptTheMasterSecret"
          Effect   = "Allow"
          Action   = "kms:Decrypt"
          Resource = var.kms_key_arn
          Condition = {
            StringEquals = { "kms:ViaService" = "secretsmanager.${local.region}.amazonaws.com" }
          }
        },
      ])
    })
  }

  lambda_assume_role = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "lambda.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })

  # Confused-deputy guard, as for the RDS monitoring role: RDS acting for this account.
  rds_assume_role = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "rds.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = {
        StringEquals = { "aws:SourceAccount" = local.account }
      }
    }]
  })

  # Confused-deputy guard: only ECS acting for this account may assume.
  ecs_tasks_assume_role = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ecs-tasks.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = {
        StringEquals = { "aws:SourceAccount" = local.account }
        ArnLike      = { "aws:SourceArn" = "arn:${local.partition}:ecs:${local.region}:${local.account}:*" }
      }
    }]
  })
}

resource "aws_iam_policy" "db_connect" {
  name        = "${local.prefix}-db-connect"
  description = "rds-db:connect as ${var.db_iam_user} on cluster ${var.cluster_resource_id}, nothing else"
  policy      = local.policy_documents.db_connect
}

resource "aws_iam_policy" "report_db_connect" {
  name        = "${local.prefix}-report-db-connect"
  description = "rds-db:connect as the read-only ${var.db_reader_user} on cluster ${var.cluster_resource_id}, nothing else"
  policy      = local.policy_documents.report_db_connect
}

# Only the functions go through the proxy: stock-events as the IAM user, report
# as the reader.
resource "aws_iam_policy" "proxy_db_connect" {
  count       = local.has_proxy_id ? 1 : 0
  name        = "${local.prefix}-proxy-db-connect"
  description = "rds-db:connect as ${var.db_iam_user} through proxy ${var.proxy_resource_id}, nothing else"
  policy      = local.policy_documents.proxy_db_connect
}

resource "aws_iam_policy" "report_proxy_db_connect" {
  count       = local.has_proxy_id ? 1 : 0
  name        = "${local.prefix}-report-proxy-db-connect"
  description = "rds-db:connect as the read-only ${var.db_reader_user} through proxy ${var.proxy_resource_id}, nothing else"
  policy      = local.policy_documents.report_proxy_db_connect
}

# --- Lambda -----------------------------------------------------------------

resource "aws_iam_role" "stock_events" {
  name               = "${local.prefix}-stock-events-lambda"
  description        = "stock-events function: SQS consumer that writes through the IAM database user"
  assume_role_policy = local.lambda_assume_role
}

resource "aws_iam_role" "report" {
  name               = "${local.prefix}-report-lambda"
  description        = "report function: reads through the read-only IAM database user"
  assume_role_policy = local.lambda_assume_role
}

# ENIs in the VPC and the function's own logs.
resource "aws_iam_role_policy_attachment" "stock_events_vpc" {
  role       = aws_iam_role.stock_events.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

resource "aws_iam_role_policy_attachment" "report_vpc" {
  role       = aws_iam_role.report.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

# Trace segments: the functions' active tracing, and the API task's X-Ray daemon
# sidecar (it uploads with the task role). Write-only: put segments and telemetry,
# read sampling rules.
resource "aws_iam_role_policy_attachment" "xray_write" {
  for_each   = { stock_events = aws_iam_role.stock_events.name, report = aws_iam_role.report.name, api_task = aws_iam_role.api_task.name }
  role       = each.value
  policy_arn = "arn:${local.partition}:iam::aws:policy/AWSXRayDaemonWriteAccess"
}

resource "aws_iam_role_policy_attachment" "stock_events_db_connect" {
  role       = aws_iam_role.stock_events.name
  policy_arn = aws_iam_policy.db_connect.arn
}

# Not db_connect: the report never logs in as the application's writer user.
resource "aws_iam_role_policy_attachment" "report_db_connect" {
  role       = aws_iam_role.report.name
  policy_arn = aws_iam_policy.report_db_connect.arn
}

resource "aws_iam_role_policy_attachment" "stock_events_proxy_db_connect" {
  count      = local.has_proxy_id ? 1 : 0
  role       = aws_iam_role.stock_events.name
  policy_arn = aws_iam_policy.proxy_db_connect[0].arn
}

resource "aws_iam_role_policy_attachment" "report_proxy_db_connect" {
  count      = local.has_proxy_id ? 1 : 0
  role       = aws_iam_role.report.name
  policy_arn = aws_iam_policy.report_proxy_db_connect[0].arn
}

resource "aws_iam_role_policy" "stock_events" {
  name   = "stock-events-queue"
  role   = aws_iam_role.stock_events.id
  policy = local.policy_documents.stock_events
}

resource "aws_iam_role_policy" "report" {
  name   = "report-dead-letters"
  role   = aws_iam_role.report.id
  policy = local.policy_documents.report
}

# --- ECS: API ----------------------------------------------------------------

resource "aws_iam_role" "api_task" {
  name               = "${local.prefix}-api-task"
  description        = "API containers: IAM database login, nothing else"
  assume_role_policy = local.ecs_tasks_assume_role
}

resource "aws_iam_role_policy_attachment" "api_task_db_connect" {
  role       = aws_iam_role.api_task.name
  policy_arn = aws_iam_policy.db_connect.arn
}

# ECS Exec, for the operators' port forwarding (enable_operator_access).
resource "aws_iam_role_policy" "api_task_operator_access" {
  count  = var.enable_operator_access ? 1 : 0
  name   = "ecs-exec-for-operators"
  role   = aws_iam_role.api_task.id
  policy = local.policy_documents.api_task_operator_access
}

resource "aws_iam_role" "api_execution" {
  name               = "${local.prefix}-api-execution"
  description        = "ECS agent for the API: pull the image, write logs; no secrets"
  assume_role_policy = local.ecs_tasks_assume_role
}

resource "aws_iam_role_policy" "api_execution" {
  name   = "pull-and-log"
  role   = aws_iam_role.api_execution.id
  policy = local.policy_documents.api_execution
}

# --- ECS: migration ----------------------------------------------------------
# The migration task has no task role: it logs in with the injected master
# password and calls no AWS API.

resource "aws_iam_role" "migration_execution" {
  name               = "${local.prefix}-migration-execution"
  description        = "ECS agent for the migration task: pull, log, inject the master secret"
  assume_role_policy = local.ecs_tasks_assume_role
}

resource "aws_iam_role_policy" "migration_execution" {
  name   = "pull-log-and-master-secret"
  role   = aws_iam_role.migration_execution.id
  policy = local.policy_documents.migration_execution
}

# --- RDS Proxy ------------------------------------------------------------------
# Created before the proxy stack (which takes its ARN); the functions' grants
# through the proxy follow once the stack has given its resource id.

resource "aws_iam_role" "rds_proxy" {
  count              = var.enable_proxy ? 1 : 0
  name               = "${local.prefix}-rds-proxy"
  description        = "RDS Proxy: logs in to the cluster with IAM as the functions' database users"
  assume_role_policy = local.rds_assume_role
}

resource "aws_iam_role_policy" "rds_proxy" {
  count  = var.enable_proxy ? 1 : 0
  name   = "connect-to-the-cluster"
  role   = aws_iam_role.rds_proxy[0].id
  policy = local.policy_documents.rds_proxy
}

# --- Token-auth IAM user -----------------------------------------------------
# Permissions go through a group, never directly on the user. Access keys are
# created out of band (or not at all), so no secret ever lands in state.

resource "aws_iam_user" "token_auth" {
  count = var.create_token_auth_user ? 1 : 0
  name  = "${local.prefix}-db-token"
  path  = "/${var.project}/"
}

resource "aws_iam_group" "token_auth" {
  count = var.create_token_auth_user ? 1 : 0
  name  = "${local.prefix}-db-token"
  path  = "/${var.project}/"
}

resource "aws_iam_group_membership" "token_auth" {
  count = var.create_token_auth_user ? 1 : 0
  name  = "${local.prefix}-db-token"
  group = aws_iam_group.token_auth[0].name
  users = [aws_iam_user.token_auth[0].name]
}

resource "aws_iam_group_policy_attachment" "token_auth_db_connect" {
  count      = var.create_token_auth_user ? 1 : 0
  group      = aws_iam_group.token_auth[0].name
  policy_arn = aws_iam_policy.db_connect.arn
}

# --- Operators ------------------------------------------------------------------
# Members (IAM users, added out of band: aws iam add-user-to-group) log in to the
# database as the operator role through an API task. For SSO, give a permission
# set the same document (terraform output policy_documents, db_operator).

resource "aws_iam_group" "db_operator" {
  count = var.enable_operator_access ? 1 : 0
  name  = "${local.prefix}-db-operator"
  path  = "/${var.project}/"
}

resource "aws_iam_group_policy" "db_operator" {
  count  = var.enable_operator_access ? 1 : 0
  name   = "operator-database-access"
  group  = aws_iam_group.db_operator[0].name
  policy = local.policy_documents.db_operator
}
