resource "aws_ec2_traffic_mirror_session" "this" {
  for_each = var.sessions

  description              = coalesce(each.value.description, "MirrorScope session ${each.key}")
  network_interface_id     = each.value.network_interface_id
  traffic_mirror_target_id = var.traffic_mirror_target_id
  traffic_mirror_filter_id = var.traffic_mirror_filter_id
  session_number           = coalesce(each.value.session_number, var.default_session_number)
  virtual_network_id       = each.value.virtual_network_id != null ? each.value.virtual_network_id : var.default_virtual_network_id
  packet_length            = each.value.packet_length != null ? each.value.packet_length : var.default_packet_length

  tags = merge(var.tags, { Name = each.key })
}
