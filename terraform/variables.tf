variable "project" {
  description = "Name prefix shared with the CloudFormation stacks (their ProjectName)."
  type        = string
  default     = "dataaccess"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.project))
    error_message = "project must be 2-21 lower-case letters, digits or hyphens, starting with a letter."
  }
}

variable "environment" {
  description = "Deployment environment, the same as the stacks' EnvironmentName."
  type        = string
  default     = "dev"

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be dev, staging or prod."
  }
}

variable "aws_region" {
  description = "Region of the stacks and of the cluster."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.aws_region))
    error_message = "aws_region must look like eu-west-1."
  }
}

variable "cluster_resource_id" {
  description = "Aurora cluster resource id (aurora stack output ClusterResourceId): the scope of rds-db:connect."
  type        = string

  validation {
    condition     = can(regex("^cluster-[A-Z0-9]+$", var.cluster_resource_id))
    error_message = "cluster_resource_id must be a cluster resource id such as cluster-ABCDEFGHIJKL0123456789, never a wildcard."
  }
}

variable "enable_proxy" {
  description = "Create the RDS Proxy's role (proxy stack parameter ProxyRoleArn): rds-db:connect on the cluster as db_iam_user and db_reader_user. The deploy sets it with DB_PROXY=on, before the proxy stack exists."
  type        = bool
  default     = false
}

variable "proxy_resource_id" {
  description = "RDS Proxy resource id (proxy stack output ProxyResourceId, prx-...): adds rds-db:connect through the proxy for the Lambda roles. Empty when there is no proxy (yet)."
  type        = string
  default     = ""

  validation {
    condition     = var.proxy_resource_id == "" || can(regex("^prx-[a-z0-9]+$", var.proxy_resource_id))
    error_message = "proxy_resource_id must be empty or a proxy resource id such as prx-0123456789abcdef0, never a wildcard."
  }

  # A proxy the module holds no role for would be one it cannot log in through.
  validation {
    condition     = var.proxy_resource_id == "" || var.enable_proxy
    error_message = "proxy_resource_id needs enable_proxy = true."
  }
}

variable "db_iam_user" {
  description = "Database login role that authenticates with IAM tokens (aurora stack output IamDbUser)."
  type        = string
  default     = "app_iam"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{2,62}$", var.db_iam_user))
    error_message = "db_iam_user must be a plain PostgreSQL role name (no wildcard)."
  }

  # An IAM login for the master user would let anyone holding this policy
  # bypass the secret, its rotation and the migration-only access to it.
  validation {
    condition     = var.db_iam_user != var.master_username && !contains(["postgres", "rdsadmin", "rds_superuser"], var.db_iam_user)
    error_message = "db_iam_user must not be the master user or an RDS administrative role."
  }
}

variable "db_reader_user" {
  description = "Read-only database login role of the report function (migration 0006's DB_IAM_READER_USER, lambda stack parameter ReportDbUser)."
  type        = string
  default     = "app_reader"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{2,62}$", var.db_reader_user))
    error_message = "db_reader_user must be a plain PostgreSQL role name (no wildcard)."
  }

  # The report must not get the writer's login, nor the master user's.
  validation {
    condition     = var.db_reader_user != var.db_iam_user && var.db_reader_user != var.master_username && !contains(["postgres", "rdsadmin", "rds_superuser"], var.db_reader_user)
    error_message = "db_reader_user must not be db_iam_user, the master user or an RDS administrative role."
  }
}

variable "db_operator_user" {
  description = "Operators' database login role (migration 0008's DB_IAM_OPERATOR_USER): reads, sees activity, cancels backends; the operator group's rds-db:connect."
  type        = string
  default     = "app_operator"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{2,62}$", var.db_operator_user))
    error_message = "db_operator_user must be a plain PostgreSQL role name (no wildcard)."
  }

  # An operator logs in as the operator role only: not as the application, the
  # report or the master user.
  validation {
    condition     = !contains([var.db_iam_user, var.db_reader_user, var.master_username, "postgres", "rdsadmin", "rds_superuser"], var.db_operator_user)
    error_message = "db_operator_user must not be db_iam_user, db_reader_user, the master user or an RDS administrative role."
  }
}

variable "enable_operator_access" {
  description = "Operators' path to the database: the operator group (rds-db:connect as db_operator_user, SSM port forwarding through the API tasks) and the API task role's ECS Exec permissions. With the ecs-api stack's OperatorAccess; the deploy sets both from OPERATOR_ACCESS."
  type        = bool
  default     = false
}

variable "master_username" {
  description = "Aurora master user name (aurora stack parameter MasterUsername); never granted an IAM login."
  type        = string
  default     = "dbadmin"
}

variable "master_secret_arn" {
  description = "The RDS-managed master secret (aurora stack output MasterUserSecretArn, rds!cluster-...); only the migration execution role may read it."
  type        = string

  # RDS names its secrets rds!cluster-<uuid>: the "!" is part of the name.
  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@!-]+$", var.master_secret_arn))
    error_message = "master_secret_arn must be a full Secrets Manager secret ARN."
  }
}

variable "kms_key_arn" {
  description = "Project KMS key (secrets stack output KmsKeyArn): encrypts the RDS-managed master secret and the SQS queues."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]+$", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (not an alias)."
  }
}

variable "ecr_repository_arn" {
  description = "API image repository (ecs-cluster stack output RepositoryArn)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:ecr:[a-z0-9-]+:[0-9]{12}:repository/[a-z0-9._/-]+$", var.ecr_repository_arn))
    error_message = "ecr_repository_arn must be an ECR repository ARN."
  }
}

variable "create_token_auth_user" {
  description = "Create the IAM user (in a group holding rds-db:connect) for token authentication from outside AWS compute, e.g. an operator's psql. Its access keys are never created here."
  type        = bool
  default     = true
}
