data "aws_region" "current" {}

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
    { AWS_REGION = data.aws_region.current.region },
    local.stream_environment[var.stream_type],
    var.extra_environment,
  )
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
    description = "HTTPS to AWS APIs (Kinesis, CloudWatch, EC2) and package repositories"
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
    package_spec = var.package_spec
    config_yaml  = local.config_yaml
    environment  = local.environment
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
    tags          = merge(var.tags, { Name = "${var.name}-collector" })
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
    for_each = merge(var.tags, { Name = "${var.name}-collector" })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  lifecycle {
    ignore_changes = [desired_capacity]
  }
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
