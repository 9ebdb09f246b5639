variable "name" {
  description = "Name prefix for the load balancer, target group and mirror target (at most 24 characters: AWS limits NLB and target group names to 32)."
  type        = string

  validation {
    condition     = length(var.name) <= 24 && can(regex("^[a-zA-Z0-9-]+$", var.name))
    error_message = "name must be at most 24 characters of letters, digits and hyphens."
  }
}

variable "vpc_id" {
  description = "ID of the VPC the collectors run in."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the NLB, one per Availability Zone that has mirror sources or collectors."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 1
    error_message = "At least one subnet is required."
  }
}

variable "enable_cross_zone_load_balancing" {
  description = "Spread mirrored traffic across collectors in every AZ. Keep it on: a mirror source sends to the NLB node in its own AZ, and without cross-zone an AZ with no healthy collector would drop its traffic."
  type        = bool
  default     = true
}

variable "enable_deletion_protection" {
  description = "Protect the NLB from deletion (turn off to let `terraform destroy` remove it)."
  type        = bool
  default     = true
}

variable "health_check_port" {
  description = "Port of the collectors' HTTP health endpoint (`mirrorscope collect` serves /healthz on 8081)."
  type        = number
  default     = 8081
}

variable "health_check_path" {
  description = "Path of the collectors' HTTP health endpoint."
  type        = string
  default     = "/healthz"
}

variable "health_check_interval_seconds" {
  description = "Seconds between health checks of each collector (5-300)."
  type        = number
  default     = 10
}

variable "healthy_threshold" {
  description = "Consecutive successful health checks before a collector receives traffic (2-10)."
  type        = number
  default     = 3
}

variable "unhealthy_threshold" {
  description = "Consecutive failed health checks before a collector stops receiving traffic (2-10)."
  type        = number
  default     = 3
}

variable "deregistration_delay_seconds" {
  description = "Seconds the NLB keeps sending existing flows to a deregistering collector (lets it drain its batches)."
  type        = number
  default     = 30
}

variable "description" {
  description = "Description of the traffic mirror target."
  type        = string
  default     = "MirrorScope collectors (NLB, UDP 4789)"
}

variable "tags" {
  description = "Tags to add to all resources."
  type        = map(string)
  default     = {}
}
