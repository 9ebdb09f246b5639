output "sns_topic_arn" {
  description = "ARN of the SNS topic the alarms notify."
  value       = aws_sns_topic.this.arn
}

output "alert_log_group_name" {
  description = "Log group for alert events (the CloudWatch sink's target)."
  value       = aws_cloudwatch_log_group.alerts.name
}

output "alert_log_group_arn" {
  description = "ARN of the alert log group."
  value       = aws_cloudwatch_log_group.alerts.arn
}

output "alarm_arns" {
  description = "ARNs of all alarms, keyed by name."
  value = merge(
    { for k, a in aws_cloudwatch_metric_alarm.alerts : a.alarm_name => a.arn },
    { (aws_cloudwatch_metric_alarm.dropped_packets.alarm_name) = aws_cloudwatch_metric_alarm.dropped_packets.arn },
    { for a in aws_cloudwatch_metric_alarm.unhealthy_collectors : a.alarm_name => a.arn },
  )
}

output "dashboard_name" {
  description = "CloudWatch dashboard of the pipeline (collectors -> stream -> workers -> sinks)."
  value       = aws_cloudwatch_dashboard.this.dashboard_name
}
