terraform {
  # Cross-variable validation (db_iam_user vs master_username) needs 1.9.
  required_version = ">= 1.9.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60.0, < 6.0.0"
    }
  }

  # Partial configuration: `make tf-init TF_BACKEND_CONFIG=path/to/backend.hcl
  # TF_STATE_KEY=<project>/<environment>/iam.tfstate` supplies bucket, region and
  # the lock table from the file and the key per environment (scripts/deploy.sh
  # derives it and refuses a file that sets its own), so no account-specific
  # value is committed and no environment plans against another's state. The
  # offline checks init with -backend=false.
  backend "s3" {}
}

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = {
      Project     = var.project
      Environment = var.environment
      ManagedBy   = "terraform"
    }
  }
}
