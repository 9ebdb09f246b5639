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
  description = "Only instances carrying this tag are mirrored, and adding the tag to a running instance mirrors it. Required: mirroring every instance would mirror the collectors and the EKS nodes too."
  type        = string
  default     = "mirrorscope:mirror"

  validation {
    condition     = try(length(trimspace(var.opt_in_tag_key)) > 0, false)
    error_message = "opt_in_tag_key is required (there is no \"mirror every instance\" mode: it would mirror the collectors into themselves)."
  }
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
  description = "Concurrency reserved for (and capping) the function; -1 reserves none. AWS refuses a reservation that leaves the account fewer than 100 unreserved executions, which a default account (limit 10 or 1000 minus other reservations) may not have, so none is reserved by default."
  type        = number
  default     = -1

  validation {
    condition     = var.reserved_concurrent_executions == -1 || var.reserved_concurrent_executions >= 1
    error_message = "reserved_concurrent_executions must be -1 (no reservation) or at least 1."
  }
}

variable "exclude_tags" {
  description = "Loop guard: instances with any of these tags are never mirrored (tag key -> value, \"*\" for any value; a key ending in * is a prefix). Add the collectors' autoscaling group and role tags and the EKS node tags."
  type        = map(string)
  default = {
    "mirrorscope:role"        = "*"
    "eks:cluster-name"        = "*"
    "aws:eks:cluster-name"    = "*"
    "eks:nodegroup-name"      = "*"
    "kubernetes.io/cluster/*" = "*"
    "karpenter.sh/nodepool"   = "*"
  }
}

variable "exclude_security_group_ids" {
  description = "Loop guard: ENIs in any of these security groups are never mirrored (the collectors' group, the EKS node and cluster groups)."
  type        = list(string)
  default     = []
}

variable "exclude_network_interface_ids" {
  description = "Loop guard: ENIs never mirrored. ENIs that AWS manages (the NLB's, endpoints) are always excluded."
  type        = list(string)
  default     = []
}

variable "incident_response_enabled" {
  description = "Mirror the primary ENI of an instance named in a GuardDuty finding for incident_mirror_minutes, then remove the session."
  type        = bool
  default     = true
}

variable "incident_session_number" {
  description = "Session number of incident sessions (1-32766, not session_number: an ENI cannot hold two sessions with one number)."
  type        = number
  default     = 2

  validation {
    condition     = var.incident_session_number >= 1 && var.incident_session_number <= 32766 && floor(var.incident_session_number) == var.incident_session_number
    error_message = "incident_session_number must be an integer from 1 to 32766."
  }
}

variable "incident_mirror_minutes" {
  description = "How long an incident session lives, in minutes (1 to 10080, a week)."
  type        = number
  default     = 60

  validation {
    condition     = var.incident_mirror_minutes >= 1 && var.incident_mirror_minutes <= 10080
    error_message = "incident_mirror_minutes must be from 1 to 10080."
  }
}

variable "incident_min_severity" {
  description = "Least GuardDuty finding severity that starts an incident session (GuardDuty: 7-8.9 high, 9-10 critical)."
  type        = number
  default     = 7

  validation {
    condition     = var.incident_min_severity >= 1 && var.incident_min_severity <= 10
    error_message = "incident_min_severity must be from 1 to 10."
  }
}

variable "expiry_check_minutes" {
  description = "How often the scheduled rule removes expired incident sessions, in minutes; a session lives at most this much longer than incident_mirror_minutes."
  type        = number
  default     = 5

  validation {
    condition     = var.expiry_check_minutes >= 1 && floor(var.expiry_check_minutes) == var.expiry_check_minutes
    error_message = "expiry_check_minutes must be a whole number of minutes, at least 1."
  }
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
