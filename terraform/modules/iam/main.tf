data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  partition = data.aws_partition.current.partition
  kinesis   = var.stream_type == "kinesis"
  msk       = var.stream_type == "msk"

  kafka_arn     = "arn:${local.partition}:kafka:${data.aws_region.current.region}:${data.aws_caller_identity.current.account_id}"
  msk_path      = "${coalesce(var.msk_cluster_name, "none")}/${coalesce(var.msk_cluster_uuid, "none")}"
  msk_cluster   = "${local.kafka_arn}:cluster/${local.msk_path}"
  packets_topic = "${local.kafka_arn}:topic/${local.msk_path}/${var.packets_topic}"
  app_topics    = "${local.kafka_arn}:topic/${local.msk_path}/${var.kafka_resource_prefix}*"
  app_groups    = "${local.kafka_arn}:group/${local.msk_path}/${var.kafka_resource_prefix}*"
  app_txn_ids   = "${local.kafka_arn}:transactional-id/${local.msk_path}/${var.kafka_resource_prefix}*"

  oidc_issuer = var.eks_oidc_issuer_url == null ? "" : replace(var.eks_oidc_issuer_url, "https://", "")
}

# Shared statements: VNI -> session/ENI discovery and namespaced metrics.
data "aws_iam_policy_document" "common" {
  statement {
    sid = "DiscoverMirrorSessions"
    # Describe* calls do not support resource-level permissions.
    actions   = ["ec2:DescribeTrafficMirrorSessions", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"]
    resources = ["*"]
  }

  statement {
    sid       = "PublishMetrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"] # PutMetricData has no resource-level permissions: the namespace condition confines it.

    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [var.metric_namespace]
    }
  }
}

# ---------------------------------------------------------------------------------------------
# Collectors (EC2 instance profile): write packets to the stream, nothing else
# ---------------------------------------------------------------------------------------------

data "aws_iam_policy_document" "collector_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "collector" {
  source_policy_documents = [data.aws_iam_policy_document.common.json]

  dynamic "statement" {
    for_each = local.kinesis ? [1] : []
    content {
      sid       = "WritePacketsToKinesis"
      actions   = ["kinesis:PutRecord", "kinesis:PutRecords", "kinesis:DescribeStreamSummary", "kinesis:ListShards"]
      resources = [var.kinesis_stream_arn]
    }
  }

  dynamic "statement" {
    for_each = local.kinesis ? [1] : []
    content {
      sid       = "EncryptKinesisRecords"
      actions   = ["kms:GenerateDataKey"]
      resources = [var.kms_key_arn]
    }
  }

  dynamic "statement" {
    for_each = local.msk ? [1] : []
    content {
      sid       = "ConnectToMsk"
      actions   = ["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"]
      resources = [local.msk_cluster]
    }
  }

  dynamic "statement" {
    for_each = local.msk ? [1] : []
    content {
      sid       = "WritePacketsTopic"
      actions   = ["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData", "kafka-cluster:CreateTopic"]
      resources = [local.packets_topic]
    }
  }
}

resource "aws_iam_role" "collector" {
  name               = "${var.name}-collector"
  assume_role_policy = data.aws_iam_policy_document.collector_assume.json

  tags = var.tags
}

resource "aws_iam_role_policy" "collector" {
  name   = "mirrorscope-collector"
  role   = aws_iam_role.collector.id
  policy = data.aws_iam_policy_document.collector.json
}

resource "aws_iam_role_policy_attachment" "collector_ssm" {
  count = var.attach_ssm_managed_instance_core ? 1 : 0

  role       = aws_iam_role.collector.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "collector" {
  name = "${var.name}-collector"
  role = aws_iam_role.collector.name

  tags = var.tags
}

# ---------------------------------------------------------------------------------------------
# Stream app and sinks on EKS (IRSA): read packets, write results, S3, CloudWatch
# ---------------------------------------------------------------------------------------------

data "aws_iam_policy_document" "stream_app_assume" {
  count = var.create_stream_app_role ? 1 : 0

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.eks_oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.service_account_namespace}:${var.service_account_name}"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "stream_app" {
  source_policy_documents = [data.aws_iam_policy_document.common.json]

  dynamic "statement" {
    for_each = local.kinesis ? [1] : []
    content {
      sid = "ReadPacketsFromKinesis"
      actions = [
        "kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:DescribeStream",
        "kinesis:DescribeStreamSummary", "kinesis:ListShards",
      ]
      resources = [var.kinesis_stream_arn]
    }
  }

  dynamic "statement" {
    for_each = local.msk ? [1] : []
    content {
      sid       = "ConnectToMsk"
      actions   = ["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"]
      resources = [local.msk_cluster]
    }
  }

  dynamic "statement" {
    for_each = local.msk ? [1] : []
    content {
      sid = "ReadWriteMirrorScopeTopics"
      actions = [
        "kafka-cluster:DescribeTopic", "kafka-cluster:DescribeTopicDynamicConfiguration",
        "kafka-cluster:CreateTopic", "kafka-cluster:ReadData", "kafka-cluster:WriteData",
      ]
      resources = [local.app_topics]
    }
  }

  dynamic "statement" {
    for_each = local.msk ? [1] : []
    content {
      sid       = "MirrorScopeConsumerGroups"
      actions   = ["kafka-cluster:AlterGroup", "kafka-cluster:DescribeGroup"]
      resources = [local.app_groups]
    }
  }

  dynamic "statement" {
    for_each = local.msk ? [1] : []
    content {
      sid       = "MirrorScopeTransactions"
      actions   = ["kafka-cluster:AlterTransactionalId", "kafka-cluster:DescribeTransactionalId"]
      resources = [local.app_txn_ids]
    }
  }

  statement {
    sid       = "WriteRecordsToS3"
    actions   = ["s3:PutObject", "s3:AbortMultipartUpload"]
    resources = ["${var.bucket_arn}/*"]
  }

  statement {
    sid       = "LocateBucket"
    actions   = ["s3:GetBucketLocation", "s3:ListBucket"]
    resources = [var.bucket_arn]
  }

  statement {
    sid       = "UseDataKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
  }

  statement {
    sid       = "WriteAlertEvents"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = [var.alert_log_group_arn, "${var.alert_log_group_arn}:*"]
  }
}

resource "aws_iam_role" "stream_app" {
  count = var.create_stream_app_role ? 1 : 0

  name               = "${var.name}-stream-app"
  assume_role_policy = data.aws_iam_policy_document.stream_app_assume[0].json

  tags = var.tags

  lifecycle {
    precondition {
      condition     = var.eks_oidc_provider_arn != null && var.eks_oidc_issuer_url != null
      error_message = "create_stream_app_role needs eks_oidc_provider_arn and eks_oidc_issuer_url."
    }
  }
}

resource "aws_iam_role_policy" "stream_app" {
  count = var.create_stream_app_role ? 1 : 0

  name   = "mirrorscope-stream-app"
  role   = aws_iam_role.stream_app[0].id
  policy = data.aws_iam_policy_document.stream_app.json
}

# ---------------------------------------------------------------------------------------------
# KEDA: reads what the worker autoscaling scales on (consumer lag, or shards and iterator age)
# ---------------------------------------------------------------------------------------------

data "aws_iam_policy_document" "keda_assume" {
  count = var.keda_operator_role_arn != null ? 1 : 0

  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "AWS"
      identifiers = [var.keda_operator_role_arn]
    }
  }
}

data "aws_iam_policy_document" "keda" {
  dynamic "statement" {
    for_each = local.msk ? [1] : []
    content {
      sid       = "ReadConsumerLag"
      actions   = ["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"]
      resources = [local.msk_cluster]
    }
  }

  dynamic "statement" {
    for_each = local.msk ? [1] : []
    content {
      sid       = "DescribePacketsTopicAndGroup"
      actions   = ["kafka-cluster:DescribeTopic", "kafka-cluster:DescribeGroup"]
      resources = [local.packets_topic, local.app_groups]
    }
  }

  dynamic "statement" {
    for_each = local.kinesis ? [1] : []
    content {
      sid       = "ReadShards"
      actions   = ["kinesis:DescribeStreamSummary", "kinesis:ListShards"]
      resources = [var.kinesis_stream_arn]
    }
  }

  dynamic "statement" {
    for_each = local.kinesis ? [1] : []
    content {
      sid = "ReadIteratorAge"
      # GetMetricData has no resource-level permissions.
      actions   = ["cloudwatch:GetMetricData"]
      resources = ["*"]
    }
  }
}

resource "aws_iam_role" "keda" {
  count = var.keda_operator_role_arn != null ? 1 : 0

  name               = "${var.name}-keda"
  assume_role_policy = data.aws_iam_policy_document.keda_assume[0].json

  tags = var.tags
}

resource "aws_iam_role_policy" "keda" {
  count = var.keda_operator_role_arn != null ? 1 : 0

  name   = "mirrorscope-keda"
  role   = aws_iam_role.keda[0].id
  policy = data.aws_iam_policy_document.keda.json
}
