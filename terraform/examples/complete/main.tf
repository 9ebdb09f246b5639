provider "aws" {
  region = var.region

  default_tags {
    tags = var.tags
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

# ---------------------------------------------------------------------------------------------
# One customer-managed key for the stream, the bucket, the logs and the alarm topic
# ---------------------------------------------------------------------------------------------

locals {
  autoscaling_service_role_arn = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
}

# The key policy names Auto Scaling's service-linked role, which must exist first (AWS creates
# it with an account's first autoscaling group; a fresh account has none).
resource "aws_iam_service_linked_role" "autoscaling" {
  count = var.create_autoscaling_service_linked_role ? 1 : 0

  aws_service_name = "autoscaling.amazonaws.com"
}

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_109:A KMS key policy's Resource "*" means this key; the account root statement is the standard delegation to IAM policies.
  #checkov:skip=CKV_AWS_111:As above: the key policy applies to this key only, and the account root must be able to administer it.
  #checkov:skip=CKV_AWS_356:As above: "*" in a key policy is the key itself.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  statement {
    sid       = "CloudWatchLogsEncrypts"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${data.aws_partition.current.partition}:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:*"]
    }
  }

  # The collectors' root volumes are encrypted with this key, and Auto Scaling launches them
  # through its service-linked role: without these grants every launch fails
  # (Client.InternalError). AWS's "Required KMS key policy for use with encrypted volumes".
  statement {
    sid       = "AutoScalingUsesTheKeyForVolumes"
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = [local.autoscaling_service_role_arn]
    }
  }

  statement {
    sid       = "AutoScalingGrantsForVolumes"
    actions   = ["kms:CreateGrant"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = [local.autoscaling_service_role_arn]
    }

    condition {
      test     = "Bool"
      variable = "kms:GrantIsForAWSResource"
      values   = ["true"]
    }
  }

  statement {
    sid       = "CloudWatchAlarmsPublishToEncryptedTopic"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "MirrorScope: stream, records bucket, logs, alarm topic"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json

  depends_on = [aws_iam_service_linked_role.autoscaling]
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.this.key_id
}

# ---------------------------------------------------------------------------------------------
# Mirroring: target (NLB), filter, static sessions, automation for new instances
# ---------------------------------------------------------------------------------------------

module "mirror_target" {
  source = "../../modules/mirror-target"

  name                       = var.name
  vpc_id                     = var.vpc_id
  subnet_ids                 = var.private_subnet_ids
  enable_deletion_protection = var.nlb_deletion_protection
}

module "mirror_filter" {
  source = "../../modules/mirror-filter"

  name  = var.name
  rules = var.filter_rules
}

module "mirror_sessions" {
  source = "../../modules/mirror-sessions"

  traffic_mirror_target_id   = module.mirror_target.traffic_mirror_target_id
  traffic_mirror_filter_id   = module.mirror_filter.traffic_mirror_filter_id
  sessions                   = var.mirror_sessions
  default_virtual_network_id = var.virtual_network_id
  default_packet_length      = var.packet_length
}

module "mirror_automation" {
  source = "../../modules/mirror-automation"

  name                     = "${var.name}-mirror-automation"
  traffic_mirror_target_id = module.mirror_target.traffic_mirror_target_id
  traffic_mirror_filter_id = module.mirror_filter.traffic_mirror_filter_id
  virtual_network_id       = var.virtual_network_id
  packet_length            = var.packet_length
  opt_in_tag_key           = var.opt_in_tag_key
  opt_in_tag_value         = var.opt_in_tag_value
  kms_key_arn              = aws_kms_key.this.arn
  # Loop guard by ENI: the collectors' and the EKS nodes' security groups (and, by default,
  # their tags and every AWS-managed ENI such as the NLB's) are never mirrored.
  exclude_security_group_ids = concat([module.collectors.security_group_id], var.eks_node_security_group_ids)
  incident_response_enabled  = var.incident_response_enabled
  incident_mirror_minutes    = var.incident_mirror_minutes
}

# ---------------------------------------------------------------------------------------------
# Data path: stream, collectors, storage
# ---------------------------------------------------------------------------------------------

module "stream" {
  source = "../../modules/stream"

  name               = var.name
  stream_type        = var.stream_type
  partition_count    = var.partition_count
  kms_key_arn        = aws_kms_key.this.arn
  vpc_id             = var.vpc_id
  subnet_ids         = var.private_subnet_ids
  client_cidr_blocks = var.vpc_cidr_blocks
}

module "storage" {
  source = "../../modules/storage"

  bucket_name = var.bucket_name
  kms_key_arn = aws_kms_key.this.arn
}

module "alarms" {
  source = "../../modules/alarms"

  name                              = var.name
  kms_key_arn                       = aws_kms_key.this.arn
  alarm_email_addresses             = var.alarm_email_addresses
  create_unhealthy_collectors_alarm = true
  nlb_arn_suffix                    = module.mirror_target.nlb_arn_suffix
  target_group_arn_suffix           = module.mirror_target.target_group_arn_suffix
  autoscaling_group_name            = module.collectors.autoscaling_group_name
  stream_type                       = module.stream.stream_type
  kinesis_stream_name               = module.stream.kinesis_stream_name
  msk_cluster_name                  = module.stream.msk_cluster_name
}

module "iam" {
  source = "../../modules/iam"

  name                      = var.name
  stream_type               = module.stream.stream_type
  kinesis_stream_arn        = module.stream.kinesis_stream_arn
  msk_cluster_name          = module.stream.msk_cluster_name
  msk_cluster_uuid          = module.stream.msk_cluster_uuid
  bucket_arn                = module.storage.bucket_arn
  kms_key_arn               = aws_kms_key.this.arn
  alert_log_group_arn       = module.alarms.alert_log_group_arn
  eks_oidc_provider_arn     = var.eks_oidc_provider_arn
  eks_oidc_issuer_url       = var.eks_oidc_issuer_url
  service_account_namespace = var.kubernetes_namespace
  service_account_name      = var.service_account_name
  keda_operator_role_arn    = var.keda_operator_role_arn
}

module "collectors" {
  source = "../../modules/collectors"

  name                      = var.name
  vpc_id                    = var.vpc_id
  subnet_ids                = var.private_subnet_ids
  target_group_arns         = [module.mirror_target.target_group_arn]
  iam_instance_profile_name = module.iam.collector_instance_profile_name
  iam_role_name             = module.iam.collector_role_name
  ami_id                    = var.collector_ami_id
  artifact_path             = var.collector_artifact_path
  mirror_source_cidr_blocks = var.mirror_source_cidr_blocks
  health_check_cidr_blocks  = var.vpc_cidr_blocks
  stream_type               = module.stream.stream_type
  kafka_bootstrap           = module.stream.kafka_bootstrap_brokers
  kinesis_stream_name       = module.stream.kinesis_stream_name
  local_filter_rules        = module.mirror_filter.rules
  kms_key_arn               = aws_kms_key.this.arn
}
