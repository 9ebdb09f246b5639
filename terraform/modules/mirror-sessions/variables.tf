variable "traffic_mirror_target_id" {
  description = "ID of the traffic mirror target (the mirror-target module's output)."
  type        = string
}

variable "traffic_mirror_filter_id" {
  description = "ID of the traffic mirror filter (the mirror-filter module's output)."
  type        = string
}

variable "sessions" {
  description = <<-EOT
    Mirror sessions to create, keyed by a static name (keys must be known at plan time, so they are
    names, not ENI IDs). network_interface_id: the source ENI. session_number: 1-32766, the session's
    priority on that ENI (lowest wins; a packet is mirrored once). virtual_network_id: the VXLAN VNI
    (0-16777215; null = the default below, or AWS picks a unique one). packet_length: bytes of each
    packet to mirror (1-8500; null = the default below, or the whole packet).
  EOT
  type = map(object({
    network_interface_id = string
    session_number       = optional(number)
    virtual_network_id   = optional(number)
    packet_length        = optional(number)
    description          = optional(string)
  }))
  default = {}

  validation {
    condition     = alltrue([for s in values(var.sessions) : s.session_number == null ? true : (s.session_number >= 1 && s.session_number <= 32766)])
    error_message = "session_number must be from 1 to 32766."
  }

  validation {
    # Sessions without a number take default_session_number; two on one ENI must differ.
    condition = length(distinct([
      for s in values(var.sessions) : "${s.network_interface_id}/${coalesce(s.session_number, 0)}"
    ])) == length(var.sessions)
    error_message = "Two sessions on one network_interface_id need distinct session_number values (AWS refuses a second session with the same number on an ENI)."
  }

  validation {
    condition     = alltrue([for s in values(var.sessions) : s.virtual_network_id == null ? true : (s.virtual_network_id >= 0 && s.virtual_network_id <= 16777215)])
    error_message = "virtual_network_id (VNI) must be from 0 to 16777215 (24 bits)."
  }

  validation {
    condition     = alltrue([for s in values(var.sessions) : s.packet_length == null ? true : (s.packet_length >= 1 && s.packet_length <= 8500)])
    error_message = "packet_length must be from 1 to 8500 bytes."
  }
}

variable "default_session_number" {
  description = "Session number for sessions that do not set one."
  type        = number
  default     = 1

  validation {
    condition     = var.default_session_number >= 1 && var.default_session_number <= 32766
    error_message = "default_session_number must be from 1 to 32766."
  }
}

variable "default_virtual_network_id" {
  description = "VNI for sessions that do not set one; null lets AWS assign a unique VNI per session (the collectors map VNIs to sessions through DescribeTrafficMirrorSessions)."
  type        = number
  default     = null

  validation {
    condition     = var.default_virtual_network_id == null ? true : (var.default_virtual_network_id >= 0 && var.default_virtual_network_id <= 16777215)
    error_message = "default_virtual_network_id must be from 0 to 16777215."
  }
}

variable "default_packet_length" {
  description = "Bytes to mirror of each packet for sessions that do not set packet_length; null mirrors whole packets. Truncating (e.g. 128) keeps headers for flow records but loses HTTP payloads."
  type        = number
  default     = null

  validation {
    condition     = var.default_packet_length == null ? true : (var.default_packet_length >= 1 && var.default_packet_length <= 8500)
    error_message = "default_packet_length must be from 1 to 8500 bytes."
  }
}

variable "tags" {
  description = "Tags to add to all sessions."
  type        = map(string)
  default     = {}
}
