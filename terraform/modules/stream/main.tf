locals {
  kinesis = var.stream_type == "kinesis"
  msk     = var.stream_type == "msk"
}

# ---------------------------------------------------------------------------------------------
# Kinesis Data Stream: one shard per partition
# ---------------------------------------------------------------------------------------------

resource "aws_kinesis_stream" "this" {
  count = local.kinesis ? 1 : 0

  name             = var.name
  shard_count      = var.partition_count
  retention_period = var.kinesis_retention_period_hours
  encryption_type  = "KMS"
  kms_key_id       = var.kms_key_arn

  stream_mode_details {
    stream_mode = "PROVISIONED"
  }

  shard_level_metrics = ["IncomingBytes", "IncomingRecords", "IteratorAgeMilliseconds", "WriteProvisionedThroughputExceeded"]

  tags = var.tags
}

# ---------------------------------------------------------------------------------------------
# Amazon MSK: IAM-authenticated TLS only, private, encrypted, logged
# ---------------------------------------------------------------------------------------------

resource "aws_security_group" "msk" {
  count = local.msk ? 1 : 0

  name        = "${var.name}-msk"
  description = "MirrorScope MSK brokers: IAM-authenticated TLS from collectors and the stream app"
  vpc_id      = var.vpc_id

  ingress {
    description = "Kafka over TLS with IAM authentication from MirrorScope clients"
    from_port   = 9098
    to_port     = 9098
    protocol    = "tcp"
    cidr_blocks = var.client_cidr_blocks
  }

  egress {
    description = "Broker-to-broker traffic (replication, controller) between the cluster's own ENIs"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    self        = true
  }

  tags = merge(var.tags, { Name = "${var.name}-msk" })
}

resource "aws_cloudwatch_log_group" "msk" {
  count = local.msk ? 1 : 0

  name              = "/aws/msk/${var.name}"
  retention_in_days = var.log_retention_in_days
  kms_key_id        = var.kms_key_arn

  tags = var.tags
}

resource "aws_msk_configuration" "this" {
  count = local.msk ? 1 : 0

  name           = var.name
  kafka_versions = [var.kafka_version]
  description    = "MirrorScope: topics are created on first use with partition_count partitions"

  server_properties = <<-EOT
    auto.create.topics.enable=true
    num.partitions=${var.partition_count}
    default.replication.factor=${var.replication_factor}
    min.insync.replicas=${var.min_insync_replicas}
    unclean.leader.election.enable=false
  EOT
}

resource "aws_msk_cluster" "this" {
  count = local.msk ? 1 : 0

  cluster_name           = var.name
  kafka_version          = var.kafka_version
  number_of_broker_nodes = var.number_of_broker_nodes
  enhanced_monitoring    = "PER_TOPIC_PER_BROKER"

  broker_node_group_info {
    instance_type   = var.broker_instance_type
    client_subnets  = var.subnet_ids
    security_groups = [aws_security_group.msk[0].id]

    storage_info {
      ebs_storage_info {
        volume_size = var.broker_volume_size_gib
      }
    }

    connectivity_info {
      public_access {
        type = "DISABLED"
      }
    }
  }

  client_authentication {
    unauthenticated = false

    sasl {
      iam = true
    }
  }

  encryption_info {
    encryption_at_rest_kms_key_arn = var.kms_key_arn

    encryption_in_transit {
      client_broker = "TLS"
      in_cluster    = true
    }
  }

  configuration_info {
    arn      = aws_msk_configuration.this[0].arn
    revision = aws_msk_configuration.this[0].latest_revision
  }

  logging_info {
    broker_logs {
      cloudwatch_logs {
        enabled   = true
        log_group = aws_cloudwatch_log_group.msk[0].name
      }
    }
  }

  open_monitoring {
    prometheus {
      jmx_exporter {
        enabled_in_broker = true
      }
      node_exporter {
        enabled_in_broker = true
      }
    }
  }

  tags = var.tags
}
