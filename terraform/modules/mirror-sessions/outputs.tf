output "session_ids" {
  description = "Traffic mirror session IDs, keyed like var.sessions."
  value       = { for k, s in aws_ec2_traffic_mirror_session.this : k => s.id }
}

output "virtual_network_ids" {
  description = "VNI of each session (AWS-assigned where none was set), keyed like var.sessions: the collectors' VNI -> session mapping."
  value       = { for k, s in aws_ec2_traffic_mirror_session.this : k => s.virtual_network_id }
}

output "network_interface_ids" {
  description = "Source ENI of each session, keyed like var.sessions."
  value       = { for k, s in aws_ec2_traffic_mirror_session.this : k => s.network_interface_id }
}
