output "autoscaling_group_name" {
  description = "Name of the collectors' autoscaling group."
  value       = aws_autoscaling_group.this.name
}

output "autoscaling_group_arn" {
  description = "ARN of the collectors' autoscaling group."
  value       = aws_autoscaling_group.this.arn
}

output "launch_template_id" {
  description = "ID of the collectors' launch template."
  value       = aws_launch_template.this.id
}

output "security_group_id" {
  description = "Security group of the collectors (allow it as a client of MSK)."
  value       = aws_security_group.this.id
}

output "config_yaml" {
  description = "The /etc/mirrorscope/config.yaml the collectors run with."
  value       = local.config_yaml
}
