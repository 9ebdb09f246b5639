resource "aws_sns_topic" "this" {
  name              = "${var.name}-alarms"
  kms_master_key_id = var.kms_key_arn

  tags = var.tags
}

resource "aws_sns_topic_subscription" "email" {
  for_each = toset(var.alarm_email_addresses)

  topic_arn = aws_sns_topic.this.arn
  protocol  = "email"
  endpoint  = each.value
}

resource "aws_cloudwatch_log_group" "alerts" {
  name              = var.alert_log_group_name
  retention_in_days = var.log_retention_in_days
  kms_key_id        = var.kms_key_arn

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "alerts" {
  for_each = toset(var.alert_severities)

  alarm_name          = "${var.name}-alerts-${each.value}"
  alarm_description   = "MirrorScope raised ${each.value}-severity alerts (details in ${var.alert_log_group_name})"
  namespace           = var.metric_namespace
  metric_name         = var.alert_metric_name
  dimensions          = { Severity = each.value }
  statistic           = "Sum"
  period              = var.period_seconds
  evaluation_periods  = var.evaluation_periods
  threshold           = var.alert_threshold
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  actions_enabled     = true
  alarm_actions       = [aws_sns_topic.this.arn]
  ok_actions          = [aws_sns_topic.this.arn]

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "dropped_packets" {
  alarm_name          = "${var.name}-dropped-packets"
  alarm_description   = "MirrorScope collectors dropped mirrored packets: scale out, or raise the socket buffers"
  namespace           = var.metric_namespace
  metric_name         = var.dropped_packets_metric_name
  statistic           = "Sum"
  period              = var.period_seconds
  evaluation_periods  = var.evaluation_periods
  threshold           = var.dropped_packets_threshold
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  actions_enabled     = true
  alarm_actions       = [aws_sns_topic.this.arn]
  ok_actions          = [aws_sns_topic.this.arn]

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "unhealthy_collectors" {
  count = var.create_unhealthy_collectors_alarm ? 1 : 0

  alarm_name          = "${var.name}-unhealthy-collectors"
  alarm_description   = "A MirrorScope collector behind the mirror-target NLB is failing its /healthz check"
  namespace           = "AWS/NetworkELB"
  metric_name         = "UnHealthyHostCount"
  dimensions          = { LoadBalancer = var.nlb_arn_suffix, TargetGroup = var.target_group_arn_suffix }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  actions_enabled     = true
  alarm_actions       = [aws_sns_topic.this.arn]
  ok_actions          = [aws_sns_topic.this.arn]

  tags = var.tags

  lifecycle {
    precondition {
      condition     = var.nlb_arn_suffix != null && var.target_group_arn_suffix != null
      error_message = "create_unhealthy_collectors_alarm needs nlb_arn_suffix and target_group_arn_suffix."
    }
  }
}

# ---------------------------------------------------------------------------------------------
# Dashboard: the pipeline end to end, left to right as the data flows
#   collectors (their own PutMetricData + EC2/ASG) -> stream (Kinesis or MSK) -> workers and
#   sinks (the CloudWatch sink's Flows/HttpTransactions/Alerts) -> alarms
# ---------------------------------------------------------------------------------------------

locals {
  ns     = var.metric_namespace
  region = data.aws_region.current.region
  stream_metrics = var.stream_type == "kinesis" ? [
    ["AWS/Kinesis", "IncomingRecords", "StreamName", coalesce(var.kinesis_stream_name, "unset"), { stat = "Sum", label = "records in" }],
    ["AWS/Kinesis", "GetRecords.Records", "StreamName", coalesce(var.kinesis_stream_name, "unset"), { stat = "Sum", label = "records read by workers" }],
    ["AWS/Kinesis", "WriteProvisionedThroughputExceeded", "StreamName", coalesce(var.kinesis_stream_name, "unset"), { stat = "Sum", label = "write throttles" }],
    ] : [
    ["AWS/Kafka", "BytesInPerSec", "Cluster Name", coalesce(var.msk_cluster_name, "unset"), { stat = "Sum", label = "bytes in/s" }],
    ["AWS/Kafka", "BytesOutPerSec", "Cluster Name", coalesce(var.msk_cluster_name, "unset"), { stat = "Sum", label = "bytes out/s" }],
  ]
  stream_lag = var.stream_type == "kinesis" ? [
    ["AWS/Kinesis", "GetRecords.IteratorAgeMilliseconds", "StreamName", coalesce(var.kinesis_stream_name, "unset"), { stat = "Maximum", label = "worker lag (iterator age, ms)" }],
    ] : [
    ["AWS/Kafka", "MaxOffsetLag", "Cluster Name", coalesce(var.msk_cluster_name, "unset"), { stat = "Maximum", label = "worker lag (max offset lag)" }],
  ]
  asg_metrics = var.autoscaling_group_name == null ? [] : [
    ["AWS/AutoScaling", "GroupInServiceInstances", "AutoScalingGroupName", var.autoscaling_group_name, { stat = "Average", label = "collectors in service" }],
  ]

  widget = {
    width  = 8
    height = 6
  }
  widgets = [
    { type = "text", x = 0, y = 0, width = 24, height = 1, properties = { markdown = "## MirrorScope: collectors → stream → workers → sinks (alarms: ${aws_cloudwatch_metric_alarm.dropped_packets.alarm_name})" } },
    {
      type = "metric", x = 0, y = 1, width = local.widget.width, height = local.widget.height
      properties = {
        title = "1. Collectors: packets", region = local.region, view = "timeSeries", stat = "Sum", period = 60
        metrics = concat([
          [local.ns, "PacketsReceived", { label = "received" }],
          [local.ns, "PacketsPublished", { label = "published" }],
          [local.ns, var.dropped_packets_metric_name, { label = "dropped (all reasons)" }],
          [local.ns, "KernelUdpDrops", { label = "kernel UDP drops" }],
        ], local.asg_metrics)
      }
    },
    {
      type = "metric", x = 8, y = 1, width = local.widget.width, height = local.widget.height
      properties = {
        title = "1. Collectors: drops by reason, publish latency", region = local.region, view = "timeSeries", period = 60
        metrics = [
          [{ expression = "SEARCH('{${local.ns},Reason} MetricName=\"${var.dropped_packets_metric_name}ByReason\"', 'Sum', 60)", id = "drops", label = "" }],
          [local.ns, "PublishLatency", { stat = "Average", label = "publish latency (ms)", yAxis = "right" }],
        ]
        annotations = { horizontal = [{ label = "alarm threshold per ${var.period_seconds}s", value = var.dropped_packets_threshold }] }
      }
    },
    {
      type = "metric", x = 16, y = 1, width = local.widget.width, height = local.widget.height
      properties = {
        title   = "2. Stream", region = local.region, view = "timeSeries", period = 60
        metrics = local.stream_metrics
      }
    },
    {
      type = "metric", x = 0, y = 7, width = local.widget.width, height = local.widget.height
      properties = {
        title   = "3. Workers: lag behind the stream", region = local.region, view = "timeSeries", period = 60
        metrics = local.stream_lag
      }
    },
    {
      type = "metric", x = 8, y = 7, width = local.widget.width, height = local.widget.height
      properties = {
        title = "4. Sinks: records out", region = local.region, view = "timeSeries", stat = "Sum", period = 60
        metrics = [
          [local.ns, "Flows", { label = "flow records" }],
          [local.ns, "HttpTransactions", { label = "HTTP transactions" }],
          [local.ns, "Packets", { label = "packets in flows" }],
        ]
      }
    },
    {
      type = "metric", x = 16, y = 7, width = local.widget.width, height = local.widget.height
      properties = {
        title   = "5. Alerts", region = local.region, view = "timeSeries", stat = "Sum", period = 60
        metrics = [for s in var.alert_severities : [local.ns, var.alert_metric_name, "Severity", s, { label = s }]]
      }
    },
  ]
}

data "aws_region" "current" {}

resource "aws_cloudwatch_dashboard" "this" {
  dashboard_name = "${var.name}-pipeline"
  dashboard_body = jsonencode({ widgets = local.widgets })
}
