variable "name" {
  description = "Name of the Kinesis stream or MSK cluster (and prefix of its helpers)."
  type        = string
}

variable "stream_type" {
  description = "The broker between collectors and the stream app: \"kinesis\" (a Kinesis Data Stream) or \"msk\" (an Amazon MSK Kafka cluster)."
  type        = string
  default     = "kinesis"

  validation {
    condition     = contains(["kinesis", "msk"], var.stream_type)
    error_message = "stream_type must be \"kinesis\" or \"msk\"."
  }
}

variable "partition_count" {
  description = "Partitions of the packet topic (Kafka) or shards of the stream (Kinesis). This is the stream app's parallelism: the Helm chart caps worker replicas at this number."
  type        = number
  default     = 12

  validation {
    condition     = var.partition_count >= 1 && floor(var.partition_count) == var.partition_count
    error_message = "partition_count must be a positive integer."
  }
}

variable "kms_key_arn" {
  description = "ARN of the KMS key that encrypts the stream or the MSK cluster's storage and logs."
  type        = string
}

variable "kinesis_retention_period_hours" {
  description = "Kinesis: hours records are kept (24-8760); longer lets the stream app replay after an outage."
  type        = number
  default     = 24
}

variable "vpc_id" {
  description = "MSK: VPC of the brokers (ignored for Kinesis)."
  type        = string
  default     = null
}

variable "subnet_ids" {
  description = "MSK: private subnets of the brokers, one per AZ; the broker count must be a multiple of their number (ignored for Kinesis)."
  type        = list(string)
  default     = []
}

variable "client_cidr_blocks" {
  description = "MSK: CIDR blocks of the clients (collectors, EKS pods) allowed to reach the brokers' IAM-authenticated TLS port 9098."
  type        = list(string)
  default     = []
}

variable "kafka_version" {
  description = "MSK: Apache Kafka version."
  type        = string
  default     = "3.8.x"
}

variable "broker_instance_type" {
  description = "MSK: broker instance type."
  type        = string
  default     = "kafka.m7g.large"
}

variable "number_of_broker_nodes" {
  description = "MSK: number of brokers (a multiple of the number of subnets)."
  type        = number
  default     = 3
}

variable "broker_volume_size_gib" {
  description = "MSK: EBS storage per broker, in GiB."
  type        = number
  default     = 100
}

variable "replication_factor" {
  description = "MSK: replication factor of automatically created topics."
  type        = number
  default     = 3
}

variable "min_insync_replicas" {
  description = "MSK: min.insync.replicas (acks=all writes need this many replicas)."
  type        = number
  default     = 2
}

variable "log_retention_in_days" {
  description = "MSK: retention of the broker log group, in days."
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags to add to all resources."
  type        = map(string)
  default     = {}
}
