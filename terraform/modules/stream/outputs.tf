output "stream_type" {
  description = "\"kinesis\" or \"msk\", as chosen."
  value       = var.stream_type
}

output "partition_count" {
  description = "Partitions (Kafka) or shards (Kinesis): the cap on stream app replicas."
  value       = var.partition_count
}

output "kinesis_stream_name" {
  description = "Name of the Kinesis stream (null for MSK)."
  value       = local.kinesis ? aws_kinesis_stream.this[0].name : null
}

output "kinesis_stream_arn" {
  description = "ARN of the Kinesis stream (null for MSK)."
  value       = local.kinesis ? aws_kinesis_stream.this[0].arn : null
}

output "msk_cluster_arn" {
  description = "ARN of the MSK cluster (null for Kinesis)."
  value       = local.msk ? aws_msk_cluster.this[0].arn : null
}

output "msk_cluster_name" {
  description = "Name of the MSK cluster (null for Kinesis)."
  value       = local.msk ? aws_msk_cluster.this[0].cluster_name : null
}

output "msk_cluster_uuid" {
  description = "UUID of the MSK cluster, part of its topic and group ARNs (null for Kinesis)."
  value       = local.msk ? aws_msk_cluster.this[0].cluster_uuid : null
}

output "kafka_bootstrap_brokers" {
  description = "Bootstrap brokers for IAM-authenticated TLS (MIRRORSCOPE_KAFKA_BOOTSTRAP; null for Kinesis)."
  value       = local.msk ? aws_msk_cluster.this[0].bootstrap_brokers_sasl_iam : null
}

output "msk_security_group_id" {
  description = "Security group of the MSK brokers (null for Kinesis)."
  value       = local.msk ? aws_security_group.msk[0].id : null
}
