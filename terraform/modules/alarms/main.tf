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
