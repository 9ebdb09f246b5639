variable "name" {
  description = "Name prefix of the launch template, autoscaling group, security group and instances."
  type        = string
}

variable "vpc_id" {
  description = "ID of the VPC the collectors run in."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the autoscaling group (spread over the same AZs as the NLB)."
  type        = list(string)
}

variable "target_group_arns" {
  description = "Target groups the instances register with (the mirror-target module's target_group_arn)."
  type        = list(string)
}

variable "iam_instance_profile_name" {
  description = "Instance profile of the collectors (the iam module's collector_instance_profile_name)."
  type        = string
}

variable "ami_id" {
  description = "AMI of the collectors; null takes the latest Amazon Linux 2023 (x86_64) from its public SSM parameter. The user data needs dnf and systemd."
  type        = string
  default     = null
}

variable "instance_type" {
  description = "Instance type (network-optimised types such as c6in keep up with more packets per second)."
  type        = string
  default     = "c6in.large"
}

variable "min_size" {
  description = "Minimum number of collectors (keep one per AZ at least)."
  type        = number
  default     = 2
}

variable "max_size" {
  description = "Maximum number of collectors."
  type        = number
  default     = 10
}

variable "target_packets_in_per_instance" {
  description = "Scaling target: average NetworkPacketsIn per collector per minute (detailed monitoring). The group scales out above it and in below it."
  type        = number
  default     = 6000000
}

variable "processes_per_host" {
  description = "`mirrorscope collect` processes per host sharing UDP 4789 with SO_REUSEPORT; 0 = one per vCPU."
  type        = number
  default     = 0
}

variable "mirror_source_cidr_blocks" {
  description = "CIDR blocks of the mirror sources (the mirrored ENIs): the NLB preserves their addresses, so the collectors' security group must admit VXLAN (UDP 4789) from them."
  type        = list(string)
}

variable "health_check_cidr_blocks" {
  description = "CIDR blocks the NLB health checks come from (its subnets, or the VPC CIDR)."
  type        = list(string)
}

variable "metrics_cidr_blocks" {
  description = "CIDR blocks allowed to scrape Prometheus metrics on port 9108; [] closes the port."
  type        = list(string)
  default     = []
}

variable "egress_cidr_blocks" {
  description = "Destinations of the collectors' HTTPS (AWS APIs, package install) and Kafka (9098) traffic."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "artifact_path" {
  description = "Local path of the collector artifact (a .tar.gz wheelhouse made by terraform/scripts/build-collector-artifact.sh). It is uploaded to this module's bucket under its SHA-256, and the instances install exactly that, with no package index."
  type        = string

  validation {
    condition     = endswith(var.artifact_path, ".tar.gz")
    error_message = "artifact_path must name the .tar.gz wheelhouse built by terraform/scripts/build-collector-artifact.sh."
  }
}

variable "iam_role_name" {
  description = "Name of the collectors' IAM role (the iam module's collector_role_name): this module adds reading the artifact and reporting a failed bootstrap to it."
  type        = string
}

variable "bootstrap_health_timeout_seconds" {
  description = "How long the user data waits for the collector's /healthz before it marks the instance Unhealthy (keep it below the group's health_check_grace_period of 300 s)."
  type        = number
  default     = 180
}

variable "metric_namespace" {
  description = "CloudWatch namespace the collectors publish their metrics to (the alarms module's metric_namespace)."
  type        = string
  default     = "MirrorScope"
}

variable "metric_interval_seconds" {
  description = "Seconds between the collectors' PutMetricData calls (60 matches the alarms' one-minute resolution)."
  type        = number
  default     = 60
}

variable "stream_type" {
  description = "\"kinesis\" or \"msk\": where the collectors publish (the stream module's stream_type)."
  type        = string

  validation {
    condition     = contains(["kinesis", "msk"], var.stream_type)
    error_message = "stream_type must be \"kinesis\" or \"msk\"."
  }
}

variable "kafka_bootstrap" {
  description = "MSK bootstrap brokers (IAM auth, port 9098) when stream_type is \"msk\"."
  type        = string
  default     = null
}

variable "kinesis_stream_name" {
  description = "Kinesis stream name when stream_type is \"kinesis\"."
  type        = string
  default     = null
}

variable "local_filter_rules" {
  description = "Rules of the collectors' local filter, same format as the mirror-filter module's rules (see docs/deploy.md); [] accepts everything the mirror filter let through."
  type = list(object({
    rule_number      = number
    direction        = string
    action           = string
    protocol         = optional(number)
    source_cidr      = string
    destination_cidr = string
    source_port_range = optional(object({
      from_port = number
      to_port   = number
    }))
    destination_port_range = optional(object({
      from_port = number
      to_port   = number
    }))
    description = optional(string)
  }))
  default = []
}

variable "extra_environment" {
  description = "Extra MIRRORSCOPE_* settings written to the collectors' environment file."
  type        = map(string)
  default     = {}
}

variable "root_volume_size_gib" {
  description = "Size of the root volume, in GiB."
  type        = number
  default     = 20
}

variable "kms_key_arn" {
  description = "ARN of the KMS key that encrypts the root volume; null uses the account's default EBS key (the volume is encrypted either way)."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags to add to all resources (propagated to the instances)."
  type        = map(string)
  default     = {}
}
