# An internal NLB with a UDP 4789 listener is the traffic mirror target. It hashes the OUTER
# 5-tuple, so the collectors re-key every packet by its inner flow (see the design brief).
resource "aws_lb" "this" {
  #checkov:skip=CKV_AWS_91:NLB access logs are written only for TLS listeners; this NLB has a single UDP listener, so there is nothing to log.
  #checkov:skip=CKV_AWS_150:Deletion protection is var.enable_deletion_protection, on by default; examples/complete turns it off so that `terraform destroy` of the example works.
  name                             = "${var.name}-nlb"
  internal                         = true
  load_balancer_type               = "network"
  subnets                          = var.subnet_ids
  enable_cross_zone_load_balancing = var.enable_cross_zone_load_balancing
  enable_deletion_protection       = var.enable_deletion_protection

  tags = var.tags
}

resource "aws_lb_target_group" "this" {
  name                 = "${var.name}-vxlan"
  port                 = 4789
  protocol             = "UDP"
  target_type          = "instance"
  vpc_id               = var.vpc_id
  deregistration_delay = var.deregistration_delay_seconds

  # UDP cannot be health-checked directly: probe the collectors' HTTP health endpoint.
  health_check {
    enabled             = true
    protocol            = "HTTP"
    port                = tostring(var.health_check_port)
    path                = var.health_check_path
    matcher             = "200-399"
    interval            = var.health_check_interval_seconds
    healthy_threshold   = var.healthy_threshold
    unhealthy_threshold = var.unhealthy_threshold
  }

  tags = var.tags
}

resource "aws_lb_listener" "vxlan" {
  load_balancer_arn = aws_lb.this.arn
  port              = 4789
  protocol          = "UDP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this.arn
  }

  tags = var.tags
}

resource "aws_ec2_traffic_mirror_target" "this" {
  description               = var.description
  network_load_balancer_arn = aws_lb.this.arn

  tags = merge(var.tags, { Name = var.name })

  # A mirror target needs a listener to deliver to.
  depends_on = [aws_lb_listener.vxlan]
}
