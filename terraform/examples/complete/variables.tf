variable "region" {
  description = "AWS region to deploy to."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Name prefix of every resource (at most 24 characters)."
  type        = string
  default     = "mirrorscope"
}

variable "vpc_id" {
  description = "VPC that holds the mirror sources, the collectors and the EKS cluster."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets, one per AZ, for the NLB, the collectors and (with MSK) the brokers."
  type        = list(string)
}

variable "vpc_cidr_blocks" {
  description = "CIDR blocks of the VPC: NLB health checks and MSK clients come from them."
  type        = list(string)
}

variable "mirror_source_cidr_blocks" {
  description = "CIDR blocks of the ENIs to mirror (VXLAN to the collectors comes from their addresses)."
  type        = list(string)
}

variable "stream_type" {
  description = "\"kinesis\" or \"msk\"."
  type        = string
  default     = "kinesis"
}

variable "partition_count" {
  description = "Kafka partitions or Kinesis shards: the stream app's parallelism (set the chart's stream.partitions to the same)."
  type        = number
  default     = 12
}

variable "bucket_name" {
  description = "Globally unique name of the records bucket."
  type        = string
}

variable "collector_ami_id" {
  description = "AMI of the collectors; null takes the latest Amazon Linux 2023."
  type        = string
  default     = null
}

variable "collector_artifact_path" {
  description = "The collector artifact: `terraform/scripts/build-collector-artifact.sh` writes it (a wheelhouse .tar.gz); the stack uploads it and the collectors install exactly it."
  type        = string
}

variable "create_autoscaling_service_linked_role" {
  description = "Create Auto Scaling's service-linked role (AWSServiceRoleForAutoScaling), which the KMS key policy names. Set true in an account that has never had an autoscaling group; false where it exists (creating it again fails)."
  type        = bool
  default     = false
}

variable "nlb_deletion_protection" {
  description = "Protect the mirror-target NLB from deletion. Off in this example so that `terraform destroy` works; turn it on for production."
  type        = bool
  default     = false
}

variable "eks_node_security_group_ids" {
  description = "Security groups of the EKS nodes (and the cluster's): the mirror automation never mirrors ENIs in them."
  type        = list(string)
  default     = []
}

variable "incident_response_enabled" {
  description = "Mirror an instance named in a GuardDuty finding (severity 7+) for incident_mirror_minutes."
  type        = bool
  default     = true
}

variable "incident_mirror_minutes" {
  description = "How long an incident mirror session lives, in minutes."
  type        = number
  default     = 60
}

variable "filter_rules" {
  description = "Mirror filter rules (docs/deploy.md, \"Filter rule format\"); the collectors' local filter gets the same list."
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
  default = [
    { rule_number = 100, direction = "ingress", action = "accept", protocol = 6, source_cidr = "0.0.0.0/0", destination_cidr = "0.0.0.0/0", description = "All inbound TCP" },
    { rule_number = 100, direction = "egress", action = "accept", protocol = 6, source_cidr = "0.0.0.0/0", destination_cidr = "0.0.0.0/0", description = "All outbound TCP" },
    { rule_number = 200, direction = "ingress", action = "accept", protocol = 17, source_cidr = "0.0.0.0/0", destination_cidr = "0.0.0.0/0", description = "All inbound UDP" },
    { rule_number = 200, direction = "egress", action = "accept", protocol = 17, source_cidr = "0.0.0.0/0", destination_cidr = "0.0.0.0/0", description = "All outbound UDP" },
  ]
}

variable "mirror_sessions" {
  description = "Static mirror sessions (ENIs to mirror now), keyed by name; see the mirror-sessions module."
  type = map(object({
    network_interface_id = string
    session_number       = optional(number)
    virtual_network_id   = optional(number)
    packet_length        = optional(number)
    description          = optional(string)
  }))
  default = {}
}

variable "virtual_network_id" {
  description = "VNI of every session created here and by the automation; null lets AWS assign one per session."
  type        = number
  default     = null
}

variable "packet_length" {
  description = "Bytes mirrored of each packet; null mirrors whole packets."
  type        = number
  default     = null
}

variable "opt_in_tag_key" {
  description = "Instances with this tag are mirrored automatically when they start or get the tag (required: collectors and EKS nodes must never be mirrored)."
  type        = string
  default     = "mirrorscope:mirror"
}

variable "opt_in_tag_value" {
  description = "Value of the opt-in tag; null accepts any value."
  type        = string
  default     = "true"
}

variable "eks_oidc_provider_arn" {
  description = "ARN of the EKS cluster's IAM OIDC provider, for the stream app's IRSA role."
  type        = string
}

variable "eks_oidc_issuer_url" {
  description = "OIDC issuer URL of the EKS cluster."
  type        = string
}

variable "kubernetes_namespace" {
  description = "Namespace the Helm chart is installed in."
  type        = string
  default     = "mirrorscope"
}

variable "service_account_name" {
  description = "ServiceAccount of the Helm release (serviceAccount.name)."
  type        = string
  default     = "mirrorscope"
}

variable "alarm_email_addresses" {
  description = "E-mail addresses notified by the alarms."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags to add to every resource."
  type        = map(string)
  default     = { Project = "mirrorscope" }
}

variable "keda_operator_role_arn" {
  description = "ARN of KEDA's operator role (IRSA), when the worker autoscales with KEDA: the stack then creates the role KEDA assumes to read consumer lag or shards (output helm_values carries it to the chart). Null: no KEDA role."
  type        = string
  default     = null
}
