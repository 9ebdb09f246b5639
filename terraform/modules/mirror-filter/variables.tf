variable "name" {
  description = "Name of the traffic mirror filter (used for the Name tag)."
  type        = string
}

variable "description" {
  description = "Description of the traffic mirror filter."
  type        = string
  default     = "MirrorScope traffic mirror filter"
}

variable "network_services" {
  description = "Network services to mirror in addition to the rules: [] or [\"amazon-dns\"] (traffic to the Amazon DNS resolver is not mirrored unless listed)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for s in var.network_services : s == "amazon-dns"])
    error_message = "The only network service AWS supports is \"amazon-dns\"."
  }
}

variable "rules" {
  description = <<-EOT
    Traffic mirror filter rules, in the format the collector's local filter reads (see docs/deploy.md).
    Each rule: rule_number (1-32766, lower is evaluated first, unique per direction), direction
    ("ingress" | "egress"), action ("accept" | "reject"), protocol (IANA protocol number, null = all),
    source_cidr and destination_cidr (IPv4 or IPv6 CIDR), optional source_port_range and
    destination_port_range ({from_port, to_port}, TCP/UDP only) and an optional description.
  EOT
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

  validation {
    condition     = alltrue([for r in var.rules : contains(["ingress", "egress"], r.direction)])
    error_message = "Each rule's direction must be \"ingress\" or \"egress\"."
  }

  validation {
    condition     = alltrue([for r in var.rules : contains(["accept", "reject"], r.action)])
    error_message = "Each rule's action must be \"accept\" or \"reject\"."
  }

  validation {
    condition     = alltrue([for r in var.rules : r.rule_number >= 1 && r.rule_number <= 32766 && floor(r.rule_number) == r.rule_number])
    error_message = "Each rule_number must be an integer from 1 to 32766."
  }

  validation {
    condition     = alltrue([for r in var.rules : r.protocol == null ? true : (r.protocol >= 0 && r.protocol <= 255)])
    error_message = "protocol must be an IANA protocol number (0-255) or null for all protocols."
  }

  validation {
    condition     = alltrue([for r in var.rules : can(cidrhost(r.source_cidr, 0))])
    error_message = "Each source_cidr must be a valid IPv4 or IPv6 CIDR block."
  }

  validation {
    condition     = alltrue([for r in var.rules : can(cidrhost(r.destination_cidr, 0))])
    error_message = "Each destination_cidr must be a valid IPv4 or IPv6 CIDR block."
  }

  validation {
    condition = alltrue(flatten([
      for r in var.rules : [
        for p in [r.source_port_range, r.destination_port_range] :
        p == null ? true : (p.from_port >= 0 && p.to_port <= 65535 && p.from_port <= p.to_port)
      ]
    ]))
    error_message = "Port ranges must satisfy 0 <= from_port <= to_port <= 65535."
  }

  validation {
    condition = alltrue([
      for r in var.rules :
      (r.source_port_range == null && r.destination_port_range == null) ? true : contains([6, 17], coalesce(r.protocol, -1))
    ])
    error_message = "Port ranges are only allowed on TCP (6) or UDP (17) rules."
  }

  validation {
    condition     = length(distinct([for r in var.rules : "${r.direction}-${r.rule_number}"])) == length(var.rules)
    error_message = "rule_number must be unique within a direction."
  }

  validation {
    # cidrnetmask() accepts IPv4 only: equal results mean one family for both ends.
    condition     = alltrue([for r in var.rules : can(cidrnetmask(r.source_cidr)) == can(cidrnetmask(r.destination_cidr))])
    error_message = "A rule's source_cidr and destination_cidr must be of one family (both IPv4 or both IPv6): AWS refuses a rule that mixes them."
  }

  validation {
    condition     = alltrue([for r in var.rules : r.rule_number > 4])
    error_message = "Rule numbers 1-4 are reserved for the rules that reject VXLAN (reject_vxlan); number your rules from 5."
  }
}

variable "reject_vxlan" {
  description = "Put rules 1-4 of each direction in front of var.rules that reject UDP 4789 (VXLAN) as source or destination port, IPv4 and IPv6, so mirrored traffic is never mirrored again. Turn off only if nothing in the mirrored subnets speaks VXLAN to the collectors."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags to add to all resources."
  type        = map(string)
  default     = {}
}
