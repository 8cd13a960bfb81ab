output "rds_db_user_arn" {
  description = "The only resource rds-db:connect is granted on."
  value       = local.rds_db_user_arn
}

output "rds_db_reader_arn" {
  description = "The only resource the report role's rds-db:connect is granted on."
  value       = local.rds_db_reader_arn
}

output "rds_db_proxy_user_arn" {
  description = "rds-db:connect resource of stock-events through the proxy (null without proxy_resource_id)."
  value       = local.rds_db_proxy_user_arn
}

output "rds_db_proxy_reader_arn" {
  description = "rds-db:connect resource of the report through the proxy (null without proxy_resource_id)."
  value       = local.rds_db_proxy_reader_arn
}

output "rds_db_operator_arn" {
  description = "The only resource the operator group's rds-db:connect is granted on (granted only with enable_operator_access)."
  value       = local.rds_db_operator_arn
}

output "db_operator_group_name" {
  description = "IAM group of the operators (null unless enable_operator_access)."
  value       = one(aws_iam_group.db_operator[*].name)
}

output "rds_proxy_role_arn" {
  description = "proxy stack parameter ProxyRoleArn (null unless enable_proxy)."
  value       = one(aws_iam_role.rds_proxy[*].arn)
}

output "db_connect_policy_arn" {
  description = "Managed policy holding rds-db:connect."
  value       = aws_iam_policy.db_connect.arn
}

output "stock_events_lambda_role_arn" {
  description = "lambda stack parameter StockEventsRoleArn."
  value       = aws_iam_role.stock_events.arn
}

output "report_lambda_role_arn" {
  description = "lambda stack parameter ReportRoleArn."
  value       = aws_iam_role.report.arn
}

output "api_task_role_arn" {
  description = "ecs-api stack parameter TaskRoleArn."
  value       = aws_iam_role.api_task.arn
}

output "api_execution_role_arn" {
  description = "ecs-api stack parameter ExecutionRoleArn."
  value       = aws_iam_role.api_execution.arn
}

output "migration_execution_role_arn" {
  description = "migration stack parameter MigrationExecutionRoleArn."
  value       = aws_iam_role.migration_execution.arn
}

output "token_auth_user_name" {
  description = "IAM user for token authentication (null when not created)."
  value       = one(aws_iam_user.token_auth[*].name)
}

output "policy_documents" {
  description = "Every permission policy this module creates, by name, for review."
  value       = { for name, document in local.policy_documents : name => document if document != null }
}
