variable "name" {
  description = "Name of the Lambda function; also the prefix of its role, log group, dead-letter queue and EventBridge rules."
  type        = string
}

variable "traffic_mirror_target_id" {
  description = "ID of the traffic mirror target new sessions send to (the mirror-target module's output)."
  type        = string
}

variable "traffic_mirror_filter_id" {
  description = "ID of the traffic mirror filter new sessions use (the mirror-filter module's output)."
  type        = string
}

variable "session_number" {
  description = "Session number of the sessions the function creates (1-32766; lowest wins on an ENI with several sessions)."
  type        = number
  default     = 1

  validation {
    condition     = var.session_number >= 1 && var.session_number <= 32766
    error_message = "session_number must be from 1 to 32766."
  }
}

variable "virtual_network_id" {
  description = "VNI of the sessions the function creates; null lets AWS assign a unique VNI per session."
  type        = number
  default     = null

  validation {
    condition     = var.virtual_network_id == null ? true : (var.virtual_network_id >= 0 && var.virtual_network_id <= 16777215)
    error_message = "virtual_network_id must be from 0 to 16777215."
  }
}

variable "packet_length" {
  description = "Bytes to mirror of each packet (1-8500); null mirrors whole packets."
  type        = number
  default     = null

  validation {
    condition     = var.packet_length == null ? true : (var.packet_length >= 1 && var.packet_length <= 8500)
    error_message = "packet_length must be from 1 to 8500 bytes."
  }
}

variable "opt_in_tag_key" {
  description = "Only instances carrying this tag are mirrored, and adding the tag to a running instance mirrors it. null mirrors every instance that starts in the account and region."
  type        = string
  default     = "mirrorscope:mirror"
}

variable "opt_in_tag_value" {
  description = "Required value of the opt-in tag; null accepts any value."
  type        = string
  default     = "true"
}

variable "trigger_on_instance_running" {
  description = "Create the session when an instance enters the running state."
  type        = bool
  default     = true
}

variable "trigger_on_tag_change" {
  description = "Create the session when the opt-in tag is added to (or changed on) an instance. Needs opt_in_tag_key."
  type        = bool
  default     = true
}

variable "kms_key_arn" {
  description = "ARN of the KMS key that encrypts the function's environment and its log group (the key policy must allow the CloudWatch Logs service)."
  type        = string
}

variable "log_retention_in_days" {
  description = "Retention of the function's log group, in days."
  type        = number
  default     = 365
}

variable "timeout_seconds" {
  description = "Function timeout, in seconds."
  type        = number
  default     = 30
}

variable "reserved_concurrent_executions" {
  description = "Concurrency reserved for (and capping) the function: a burst of launches queues instead of throttling the EC2 API."
  type        = number
  default     = 5
}

variable "vpc_subnet_ids" {
  description = "Subnets to run the function in; [] runs it outside a VPC (it only calls the EC2 API). In a VPC it needs an EC2 interface endpoint or a NAT."
  type        = list(string)
  default     = []
}

variable "vpc_security_group_ids" {
  description = "Security groups of the function when vpc_subnet_ids is set (egress HTTPS to the EC2 API)."
  type        = list(string)
  default     = []
}

variable "code_signing_config_arn" {
  description = "ARN of a Lambda code-signing configuration to enforce; null deploys the zip built from this repository unsigned."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags to add to all resources."
  type        = map(string)
  default     = {}
}
