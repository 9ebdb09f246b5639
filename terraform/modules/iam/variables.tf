variable "name" {
  description = "Prefix of the roles, policies and instance profile."
  type        = string
}

variable "stream_type" {
  description = "\"kinesis\" or \"msk\": which broker permissions the roles get (the stream module's stream_type output)."
  type        = string

  validation {
    condition     = contains(["kinesis", "msk"], var.stream_type)
    error_message = "stream_type must be \"kinesis\" or \"msk\"."
  }
}

variable "kinesis_stream_arn" {
  description = "ARN of the Kinesis stream (when stream_type is \"kinesis\")."
  type        = string
  default     = null
}

variable "msk_cluster_name" {
  description = "Name of the MSK cluster (when stream_type is \"msk\")."
  type        = string
  default     = null
}

variable "msk_cluster_uuid" {
  description = "UUID of the MSK cluster, part of its topic and group ARNs (when stream_type is \"msk\")."
  type        = string
  default     = null
}

variable "packets_topic" {
  description = "Kafka topic the collectors write to and the stream app reads."
  type        = string
  default     = "mirrorscope.packets"
}

variable "kafka_resource_prefix" {
  description = "Prefix of every Kafka topic, consumer group and transactional ID the stream app uses (result topics mirrorscope.flows/.http/.alerts/.dns/.tls/.ssh, Faust changelog topics, the consumer group)."
  type        = string
  default     = "mirrorscope"
}

variable "bucket_arn" {
  description = "ARN of the records bucket the S3 sink writes to."
  type        = string
}

variable "kms_key_arn" {
  description = "ARN of the KMS key that encrypts the stream and the bucket."
  type        = string
}

variable "metric_namespace" {
  description = "The only CloudWatch namespace the roles may publish metrics to."
  type        = string
  default     = "MirrorScope"
}

variable "alert_log_group_arn" {
  description = "ARN of the log group the CloudWatch sink writes alert events to."
  type        = string
}

variable "attach_ssm_managed_instance_core" {
  description = "Attach AmazonSSMManagedInstanceCore to the collector role, for Session Manager access instead of SSH keys."
  type        = bool
  default     = true
}

variable "create_stream_app_role" {
  description = "Create the stream app's IRSA role (needs the EKS cluster's OIDC provider)."
  type        = bool
  default     = true
}

variable "eks_oidc_provider_arn" {
  description = "ARN of the EKS cluster's IAM OIDC provider (IRSA)."
  type        = string
  default     = null
}

variable "eks_oidc_issuer_url" {
  description = "OIDC issuer URL of the EKS cluster (https://oidc.eks.REGION.amazonaws.com/id/...)."
  type        = string
  default     = null
}

variable "service_account_namespace" {
  description = "Kubernetes namespace of the chart's ServiceAccount (the Helm release namespace)."
  type        = string
  default     = "mirrorscope"
}

variable "service_account_name" {
  description = "Name of the chart's ServiceAccount (serviceAccount.name in the Helm values; the chart's default is the release's full name)."
  type        = string
  default     = "mirrorscope"
}

variable "tags" {
  description = "Tags to add to all resources."
  type        = map(string)
  default     = {}
}

variable "keda_operator_role_arn" {
  description = "ARN of the role KEDA's operator runs as (its IRSA role). When set, a role that this role may assume is created with just what the worker's ScaledObject reads (MSK: the cluster, the packets topic and the consumer group; Kinesis: the stream's shards and iterator age); its ARN is the chart's worker.autoscaling.keda.triggerAuthentication.podIdentity.roleArn. Null: no KEDA role."
  type        = string
  default     = null
}
