output "lambda_function_arn" {
  description = "ARN of the automation Lambda function."
  value       = aws_lambda_function.this.arn
}

output "lambda_function_name" {
  description = "Name of the automation Lambda function."
  value       = aws_lambda_function.this.function_name
}

output "lambda_role_arn" {
  description = "ARN of the function's execution role."
  value       = aws_iam_role.this.arn
}

output "dead_letter_queue_arn" {
  description = "ARN of the SQS queue that receives events the function failed on after all retries."
  value       = aws_sqs_queue.dlq.arn
}

output "log_group_name" {
  description = "Log group of the function (one JSON line per event handled)."
  value       = aws_cloudwatch_log_group.this.name
}

output "event_rule_arns" {
  description = "ARNs of the EventBridge rules that invoke the function."
  value       = [for r in local.rules : r.arn]
}
