data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  # EC2 resolves the public SSM parameter at launch, so new instances get the latest AL2023.
  ami_id = coalesce(var.ami_id, "resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")

  # /etc/mirrorscope/config.yaml: what `mirrorscope collect --config` reads (docs/collectors.md).
  collector_config = {
    listen       = { address = "0.0.0.0", port = 4789 }
    processes    = var.processes_per_host
    source_cidrs = var.mirror_source_cidr_blocks
    filter       = { rules = var.local_filter_rules }
    enrichment   = { discover = true } # VNI -> session -> ENI/instance through the EC2 API
    health       = { port = 8081 }
    metrics      = { port = 9108 }
    # The alarms' metrics (PacketsDropped...) come from the collector itself: nothing scrapes
    # the Prometheus port on EC2 (collectors/cloudwatch.py).
    cloudwatch = {
      enabled    = true
      namespace  = var.metric_namespace
      interval_s = var.metric_interval_seconds
    }
  }
  config_yaml = yamlencode(local.collector_config)

  # /etc/mirrorscope/environment: MIRRORSCOPE_* settings (systemd EnvironmentFile).
  stream_environment = {
    msk = {
      MIRRORSCOPE_TRANSPORT            = "kafka"
      MIRRORSCOPE_KAFKA_BOOTSTRAP      = coalesce(var.kafka_bootstrap, "unset")
      MIRRORSCOPE_KAFKA_SECURITY       = "SASL_SSL"
      MIRRORSCOPE_KAFKA_SASL_MECHANISM = "AWS_MSK_IAM"
      MIRRORSCOPE_KAFKA_TOPIC          = "mirrorscope.packets"
    }
    kinesis = {
      MIRRORSCOPE_TRANSPORT      = "kinesis"
      MIRRORSCOPE_KINESIS_STREAM = coalesce(var.kinesis_stream_name, "unset")
    }
  }
  environment = merge(
    { AWS_REGION = data.aws_region.current.region, AWS_DEFAULT_REGION = data.aws_region.current.region },
    local.stream_environment[var.stream_type],
    var.extra_environment,
  )
}

# ---------------------------------------------------------------------------------------------
# The collector artifact: a wheelhouse (the mirrorscope wheel with its C extensions and every
# dependency) built by terraform/scripts/build-collector-artifact.sh, stored content-addressed in
# a bucket of this stack and installed by the user data with no package index.
# ---------------------------------------------------------------------------------------------

locals {
  artifact_sha256 = filesha256(var.artifact_path)
  artifact_key    = "collector/mirrorscope-${local.artifact_sha256}.tar.gz"
  artifact_bucket = "${var.name}-artifacts-${data.aws_caller_identity.current.account_id}-${data.aws_region.current.region}"
}

resource "aws_s3_bucket" "artifacts" {
  #checkov:skip=CKV_AWS_144:The artifact is rebuilt from the repository by the build script; replicating it to another region is the operator's choice.
  #checkov:skip=CKV2_AWS_62:Nothing consumes object-created events: instances fetch the artifact by its content-addressed key.
  #checkov:skip=CKV_AWS_18:Only the collectors' instance role reads this bucket (bucket policy below); CloudTrail data events cover access auditing where wanted.
  bucket        = local.artifact_bucket
  force_destroy = true # holds only rebuildable artifacts: `terraform destroy` must not stop at it

  tags = var.tags
}

resource "aws_s3_bucket_ownership_controls" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id

  rule {
    id     = "old-artifacts"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = 30
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.artifacts]
}

data "aws_iam_policy_document" "artifacts_bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.artifacts.arn, "${aws_s3_bucket.artifacts.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  policy = data.aws_iam_policy_document.artifacts_bucket.json

  depends_on = [aws_s3_bucket_public_access_block.artifacts]
}

resource "aws_s3_object" "artifact" {
  bucket      = aws_s3_bucket.artifacts.id
  key         = local.artifact_key
  source      = var.artifact_path
  source_hash = local.artifact_sha256
  kms_key_id  = var.kms_key_arn

  tags = var.tags

  depends_on = [aws_s3_bucket_server_side_encryption_configuration.artifacts]
}

# What the user data needs beyond the iam module's collector policy: read this artifact, and
# report a failed bootstrap to the autoscaling group.
data "aws_iam_policy_document" "bootstrap" {
  statement {
    sid       = "ReadTheArtifact"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.artifacts.arn}/collector/*"]
  }

  statement {
    sid       = "DecryptTheArtifact"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
  }

  statement {
    sid       = "ReportFailedBootstrap"
    actions   = ["autoscaling:SetInstanceHealth"]
    resources = ["arn:${data.aws_partition.current.partition}:autoscaling:${data.aws_region.current.region}:${data.aws_caller_identity.current.account_id}:autoScalingGroup:*:autoScalingGroupName/${var.name}-collectors"]
  }
}

resource "aws_iam_role_policy" "bootstrap" {
  name   = "mirrorscope-collector-bootstrap"
  role   = var.iam_role_name
  policy = data.aws_iam_policy_document.bootstrap.json
}

resource "aws_security_group" "this" {
  name        = "${var.name}-collectors"
  description = "MirrorScope collectors: VXLAN from mirror sources, health checks from the NLB"
  vpc_id      = var.vpc_id

  ingress {
    description = "VXLAN (mirrored traffic) from the mirror sources through the NLB"
    from_port   = 4789
    to_port     = 4789
    protocol    = "udp"
    cidr_blocks = var.mirror_source_cidr_blocks
  }

  ingress {
    description = "NLB health checks of /healthz"
    from_port   = 8081
    to_port     = 8081
    protocol    = "tcp"
    cidr_blocks = var.health_check_cidr_blocks
  }

  dynamic "ingress" {
    for_each = length(var.metrics_cidr_blocks) > 0 ? [1] : []
    content {
      description = "Prometheus scrapes of /metrics"
      from_port   = 9108
      to_port     = 9108
      protocol    = "tcp"
      cidr_blocks = var.metrics_cidr_blocks
    }
  }

  egress {
    description = "HTTPS to AWS APIs (S3 artifact, Kinesis, CloudWatch, EC2, Auto Scaling) and the distribution's repository"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = var.egress_cidr_blocks
  }

  egress {
    description = "Kafka over TLS with IAM authentication (MSK)"
    from_port   = 9098
    to_port     = 9098
    protocol    = "tcp"
    cidr_blocks = var.egress_cidr_blocks
  }

  tags = merge(var.tags, { Name = "${var.name}-collectors" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_launch_template" "this" {
  name_prefix            = "${var.name}-collector-"
  description            = "MirrorScope collector"
  image_id               = local.ami_id
  instance_type          = var.instance_type
  update_default_version = true
  ebs_optimized          = true

  user_data = base64encode(templatefile("${path.module}/templates/user_data.sh.tftpl", {
    region           = data.aws_region.current.region
    artifact_bucket  = local.artifact_bucket
    artifact_key     = local.artifact_key
    artifact_sha256  = local.artifact_sha256
    health_port      = local.collector_config.health.port
    health_timeout_s = var.bootstrap_health_timeout_seconds
    config_yaml      = local.config_yaml
    environment      = local.environment
  }))

  iam_instance_profile {
    name = var.iam_instance_profile_name
  }

  network_interfaces {
    associate_public_ip_address = false
    delete_on_termination       = true
    security_groups             = [aws_security_group.this.id]
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "enabled"
  }

  monitoring {
    enabled = true # one-minute NetworkPacketsIn for scaling
  }

  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = var.root_volume_size_gib
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = var.kms_key_arn
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    # mirrorscope:role is the mirror automation's loop guard: collectors are never mirrored.
    tags = merge(var.tags, { Name = "${var.name}-collector", "mirrorscope:role" = "collector" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(var.tags, { Name = "${var.name}-collector" })
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = var.stream_type == "msk" ? var.kafka_bootstrap != null : var.kinesis_stream_name != null
      error_message = "stream_type \"msk\" needs kafka_bootstrap; \"kinesis\" needs kinesis_stream_name."
    }
  }
}

resource "aws_autoscaling_group" "this" {
  name                      = "${var.name}-collectors"
  min_size                  = var.min_size
  max_size                  = var.max_size
  vpc_zone_identifier       = var.subnet_ids
  target_group_arns         = var.target_group_arns
  health_check_type         = "ELB"
  health_check_grace_period = 300
  default_instance_warmup   = 300
  enabled_metrics           = ["GroupInServiceInstances", "GroupDesiredCapacity", "GroupTotalInstances"]

  launch_template {
    id      = aws_launch_template.this.id
    version = aws_launch_template.this.latest_version
  }

  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 50
    }
  }

  dynamic "tag" {
    for_each = merge(var.tags, { Name = "${var.name}-collector", "mirrorscope:role" = "collector" })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  lifecycle {
    ignore_changes = [desired_capacity]
  }

  # Instances must be able to fetch the artifact and report a failed bootstrap when they boot.
  depends_on = [aws_s3_object.artifact, aws_iam_role_policy.bootstrap]
}

# Scale on packets, not CPU: the NLB spreads flows, and packets per second is what a collector
# (one UDP socket per process) is limited by.
resource "aws_autoscaling_policy" "packets_in" {
  name                   = "${var.name}-network-packets-in"
  autoscaling_group_name = aws_autoscaling_group.this.name
  policy_type            = "TargetTrackingScaling"

  target_tracking_configuration {
    target_value = var.target_packets_in_per_instance

    customized_metric_specification {
      namespace   = "AWS/EC2"
      metric_name = "NetworkPacketsIn"
      statistic   = "Average"

      metric_dimension {
        name  = "AutoScalingGroupName"
        value = aws_autoscaling_group.this.name
      }
    }
  }
}
