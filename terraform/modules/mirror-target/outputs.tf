output "traffic_mirror_target_id" {
  description = "ID of the traffic mirror target (give it to mirror-sessions and mirror-automation)."
  value       = aws_ec2_traffic_mirror_target.this.id
}

output "traffic_mirror_target_arn" {
  description = "ARN of the traffic mirror target."
  value       = aws_ec2_traffic_mirror_target.this.arn
}

output "nlb_arn" {
  description = "ARN of the network load balancer."
  value       = aws_lb.this.arn
}

output "nlb_arn_suffix" {
  description = "ARN suffix of the NLB (the LoadBalancer dimension of its CloudWatch metrics)."
  value       = aws_lb.this.arn_suffix
}

output "nlb_dns_name" {
  description = "DNS name of the NLB."
  value       = aws_lb.this.dns_name
}

output "target_group_arn" {
  description = "ARN of the UDP 4789 target group (give it to the collectors module)."
  value       = aws_lb_target_group.this.arn
}

output "target_group_arn_suffix" {
  description = "ARN suffix of the target group (the TargetGroup dimension of its CloudWatch metrics)."
  value       = aws_lb_target_group.this.arn_suffix
}
