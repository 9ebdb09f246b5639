variable "name" {
  description = "Prefix of the SNS topic, alarms and alert log group."
  type        = string
}

variable "kms_key_arn" {
  description = "ARN of the KMS key that encrypts the SNS topic and the alert log group (its policy must allow cloudwatch.amazonaws.com and the CloudWatch Logs service)."
  type        = string
}

variable "alarm_email_addresses" {
  description = "E-mail addresses subscribed to the alarm topic (each must confirm the subscription)."
  type        = list(string)
  default     = []
}

variable "metric_namespace" {
  description = "CloudWatch namespace the collectors and the CloudWatch sink publish to."
  type        = string
  default     = "MirrorScope"
}

variable "alert_metric_name" {
  description = "Metric the CloudWatch sink publishes per alert, with a Severity dimension."
  type        = string
  default     = "Alerts"
}

variable "alert_severities" {
  description = "Alert severities (values of the Severity dimension) that raise an alarm."
  type        = list(string)
  default     = ["high", "critical"]
}

variable "alert_threshold" {
  description = "Alerts of one severity within one period that raise the alarm."
  type        = number
  default     = 1
}

variable "dropped_packets_metric_name" {
  description = "Metric the collectors publish for packets they dropped (socket buffer overruns, full queues, publish failures)."
  type        = string
  default     = "PacketsDropped"
}

variable "dropped_packets_threshold" {
  description = "Dropped packets within one period (summed over all collectors) that raise the alarm."
  type        = number
  default     = 1000
}

variable "period_seconds" {
  description = "Period of the alarms' metric statistics, in seconds."
  type        = number
  default     = 300
}

variable "evaluation_periods" {
  description = "Periods evaluated before an alarm changes state."
  type        = number
  default     = 1
}

variable "create_unhealthy_collectors_alarm" {
  description = "Add an alarm when a collector behind the mirror-target NLB fails its health check (needs nlb_arn_suffix and target_group_arn_suffix)."
  type        = bool
  default     = false
}

variable "nlb_arn_suffix" {
  description = "ARN suffix of the mirror-target NLB (the mirror-target module's nlb_arn_suffix output)."
  type        = string
  default     = null
}

variable "target_group_arn_suffix" {
  description = "ARN suffix of the collectors' target group (see nlb_arn_suffix)."
  type        = string
  default     = null
}

variable "alert_log_group_name" {
  description = "Log group the CloudWatch sink writes alert events to."
  type        = string
  default     = "/mirrorscope/alerts"
}

variable "log_retention_in_days" {
  description = "Retention of the alert log group, in days."
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags to add to all resources."
  type        = map(string)
  default     = {}
}

variable "autoscaling_group_name" {
  description = "Collectors' autoscaling group (its instance count and network packets on the dashboard); null leaves them off."
  type        = string
  default     = null
}

variable "stream_type" {
  description = "\"kinesis\" or \"msk\": which stream metrics the dashboard shows."
  type        = string
  default     = "kinesis"

  validation {
    condition     = contains(["kinesis", "msk"], var.stream_type)
    error_message = "stream_type must be \"kinesis\" or \"msk\"."
  }
}

variable "kinesis_stream_name" {
  description = "Kinesis stream of the packets (stream_type \"kinesis\")."
  type        = string
  default     = null
}

variable "msk_cluster_name" {
  description = "MSK cluster of the packets (stream_type \"msk\")."
  type        = string
  default     = null
}
