locals {
  # Reject VXLAN (UDP 4789, either port) before any other rule: mirroring the mirrored traffic
  # (a collector, an overlay network, another mirror target) would send it back to the
  # collectors, a loop that grows with every packet. Rules 1-4 per direction, IPv4 and IPv6.
  vxlan_reject_rules = var.reject_vxlan ? flatten([
    for direction in ["ingress", "egress"] : [
      for i, spec in [
        { cidr = "0.0.0.0/0", port = "destination" }, { cidr = "0.0.0.0/0", port = "source" },
        { cidr = "::/0", port = "destination" }, { cidr = "::/0", port = "source" },
        ] : {
        rule_number            = i + 1
        direction              = direction
        action                 = "reject"
        protocol               = 17
        source_cidr            = spec.cidr
        destination_cidr       = spec.cidr
        source_port_range      = spec.port == "source" ? { from_port = 4789, to_port = 4789 } : null
        destination_port_range = spec.port == "destination" ? { from_port = 4789, to_port = 4789 } : null
        description            = "Never mirror VXLAN (UDP 4789 ${spec.port} port): it would loop through the collectors"
      }
    ]
  ]) : []
  all_rules = concat(local.vxlan_reject_rules, var.rules)

  # Keyed by direction and rule number: both are static inputs, unique per filter (validated).
  rules = { for r in local.all_rules : "${r.direction}-${r.rule_number}" => r }
}

resource "aws_ec2_traffic_mirror_filter" "this" {
  description      = var.description
  network_services = var.network_services

  tags = merge(var.tags, { Name = var.name })
}

resource "aws_ec2_traffic_mirror_filter_rule" "this" {
  for_each = local.rules

  traffic_mirror_filter_id = aws_ec2_traffic_mirror_filter.this.id
  description              = each.value.description
  rule_number              = each.value.rule_number
  traffic_direction        = each.value.direction
  rule_action              = each.value.action
  protocol                 = each.value.protocol
  source_cidr_block        = each.value.source_cidr
  destination_cidr_block   = each.value.destination_cidr

  dynamic "source_port_range" {
    for_each = each.value.source_port_range == null ? [] : [each.value.source_port_range]
    content {
      from_port = source_port_range.value.from_port
      to_port   = source_port_range.value.to_port
    }
  }

  dynamic "destination_port_range" {
    for_each = each.value.destination_port_range == null ? [] : [each.value.destination_port_range]
    content {
      from_port = destination_port_range.value.from_port
      to_port   = destination_port_range.value.to_port
    }
  }
}
