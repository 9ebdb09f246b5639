output "collector_role_arn" {
  description = "ARN of the collectors' instance role."
  value       = aws_iam_role.collector.arn
}

output "collector_instance_profile_name" {
  description = "Name of the collectors' instance profile (the collectors module's iam_instance_profile_name)."
  value       = aws_iam_instance_profile.collector.name
}

output "stream_app_role_arn" {
  description = "ARN of the stream app's IRSA role: the Helm value serviceAccount.roleArn (null when not created)."
  value       = var.create_stream_app_role ? aws_iam_role.stream_app[0].arn : null
}

output "collector_role_name" {
  description = "Name of the collectors' instance role (the collectors module adds its bootstrap policy to it)."
  value       = aws_iam_role.collector.name
}

output "keda_role_arn" {
  description = "ARN of the role KEDA assumes to read consumer lag or the stream's shards and iterator age: the Helm value worker.autoscaling.keda.triggerAuthentication.podIdentity.roleArn (null without keda_operator_role_arn)."
  value       = var.keda_operator_role_arn != null ? aws_iam_role.keda[0].arn : null
}
