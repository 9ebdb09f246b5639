locals {
  # Keyed by direction and rule number: both are static inputs, unique per filter (validated).
  rules = { for r in var.rules : "${r.direction}-${r.rule_number}" => r }
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
