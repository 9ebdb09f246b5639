output "traffic_mirror_filter_id" {
  description = "ID of the traffic mirror filter."
  value       = aws_ec2_traffic_mirror_filter.this.id
}

output "traffic_mirror_filter_arn" {
  description = "ARN of the traffic mirror filter."
  value       = aws_ec2_traffic_mirror_filter.this.arn
}

output "rule_ids" {
  description = "IDs of the filter rules, keyed by \"<direction>-<rule_number>\"."
  value       = { for k, r in aws_ec2_traffic_mirror_filter_rule.this : k => r.id }
}

output "rules" {
  description = "Every rule of the filter (the VXLAN rejections first, then var.rules), in the collector's local-filter format (feed them to the collectors module's local_filter_rules to filter identically on the host)."
  value       = local.all_rules
}
