data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  arn_prefix  = "arn:${data.aws_partition.current.partition}:ec2:${data.aws_region.current.region}:${data.aws_caller_identity.current.account_id}"
  tag_trigger = var.trigger_on_tag_change
  in_vpc      = length(var.vpc_subnet_ids) > 0
  log_group   = "/aws/lambda/${var.name}"
  lambda_env = {
    TARGET_ID      = var.traffic_mirror_target_id
    FILTER_ID      = var.traffic_mirror_filter_id
    SESSION_NUMBER = tostring(var.session_number)
    VNI            = (var.virtual_network_id == null ? "" : tostring(var.virtual_network_id))
    PACKET_LENGTH  = (var.packet_length == null ? "" : tostring(var.packet_length))
    TAG_KEY        = var.opt_in_tag_key
    TAG_VALUE      = (var.opt_in_tag_value == null ? "" : var.opt_in_tag_value)
    # The loop guard: the pipeline's own parts are never mirrored (see lambda/handler.py).
    EXCLUDE_TAGS               = jsonencode(var.exclude_tags)
    EXCLUDE_SECURITY_GROUP_IDS = join(",", var.exclude_security_group_ids)
    EXCLUDE_ENI_IDS            = join(",", var.exclude_network_interface_ids)
    INCIDENT_SESSION_NUMBER    = tostring(var.incident_session_number)
    INCIDENT_MINUTES           = tostring(var.incident_mirror_minutes)
    INCIDENT_MIN_SEVERITY      = tostring(var.incident_min_severity)
  }
}

data "archive_file" "lambda" {
  type        = "zip"
  source_file = "${path.module}/lambda/handler.py"
  output_path = "${path.module}/.build/${var.name}.zip"
}

# ---------------------------------------------------------------------------------------------
# Function
# ---------------------------------------------------------------------------------------------

resource "aws_cloudwatch_log_group" "this" {
  name              = local.log_group
  retention_in_days = var.log_retention_in_days
  kms_key_id        = var.kms_key_arn

  tags = var.tags
}

resource "aws_sqs_queue" "dlq" {
  name                      = "${var.name}-dlq"
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true

  tags = var.tags
}

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_117:The function only calls the EC2 API; running it in a VPC is optional (var.vpc_subnet_ids) because it then needs an EC2 endpoint or a NAT.
  #checkov:skip=CKV_AWS_272:The zip is built at plan time from lambda/handler.py in this repository; signing is enforced when var.code_signing_config_arn names the operator's AWS Signer configuration.
  function_name                  = var.name
  description                    = "MirrorScope: mirror sessions for opted-in instances and, time-boxed, for GuardDuty findings"
  role                           = aws_iam_role.this.arn
  runtime                        = "python3.11"
  handler                        = "handler.handler"
  filename                       = data.archive_file.lambda.output_path
  source_code_hash               = data.archive_file.lambda.output_base64sha256
  timeout                        = var.timeout_seconds
  memory_size                    = 128
  reserved_concurrent_executions = var.reserved_concurrent_executions
  kms_key_arn                    = var.kms_key_arn
  code_signing_config_arn        = var.code_signing_config_arn

  environment {
    variables = local.lambda_env
  }

  dead_letter_config {
    target_arn = aws_sqs_queue.dlq.arn
  }

  tracing_config {
    mode = "Active"
  }

  logging_config {
    log_format = "Text" # the handler writes one JSON object per line itself
    log_group  = aws_cloudwatch_log_group.this.name
  }

  dynamic "vpc_config" {
    for_each = local.in_vpc ? [1] : []
    content {
      subnet_ids         = var.vpc_subnet_ids
      security_group_ids = var.vpc_security_group_ids
    }
  }

  tags = var.tags

  depends_on = [aws_iam_role_policy.this, aws_cloudwatch_log_group.this]

  lifecycle {
    precondition {
      condition     = var.incident_session_number != var.session_number
      error_message = "incident_session_number must differ from session_number: an ENI cannot hold two sessions with one number."
    }
  }
}

# Asynchronous invocations (EventBridge): a failure the handler raises is transient (permanent
# ones are returned, see lambda/handler.py), so it is worth two more tries before the DLQ.
resource "aws_lambda_function_event_invoke_config" "this" {
  function_name                = aws_lambda_function.this.function_name
  maximum_retry_attempts       = 2
  maximum_event_age_in_seconds = 3600
}

# ---------------------------------------------------------------------------------------------
# Triggers (the webinar's automated workflow: instance appears -> session for its ENI)
# ---------------------------------------------------------------------------------------------

resource "aws_cloudwatch_event_rule" "instance_running" {
  count = var.trigger_on_instance_running ? 1 : 0

  name        = "${var.name}-instance-running"
  description = "EC2 instance entered the running state: mirror its primary ENI"
  event_pattern = jsonencode({
    source        = ["aws.ec2"]
    "detail-type" = ["EC2 Instance State-change Notification"]
    detail        = { state = ["running"] }
  })

  tags = var.tags
}

resource "aws_cloudwatch_event_rule" "tag_change" {
  count = local.tag_trigger ? 1 : 0

  name        = "${var.name}-tag-change"
  description = "The opt-in tag changed on an EC2 instance: mirror its primary ENI"
  event_pattern = jsonencode({
    source        = ["aws.tag"]
    "detail-type" = ["Tag Change on Resource"]
    detail = {
      service            = ["ec2"]
      "resource-type"    = ["instance"]
      "changed-tag-keys" = [var.opt_in_tag_key]
    }
  })

  tags = var.tags
}

# Incident response (AWS's "traffic mirroring for incident response"): a GuardDuty finding about
# an instance mirrors its primary ENI for var.incident_mirror_minutes; the scheduled rule below
# removes the session when that time is up.
resource "aws_cloudwatch_event_rule" "guardduty" {
  count = var.incident_response_enabled ? 1 : 0

  name        = "${var.name}-guardduty"
  description = "GuardDuty finding about an EC2 instance: mirror its primary ENI for a while"
  event_pattern = jsonencode({
    source        = ["aws.guardduty"]
    "detail-type" = ["GuardDuty Finding"]
    detail = {
      resource = { resourceType = ["Instance"] }
      severity = [{ numeric = [">=", var.incident_min_severity] }]
    }
  })

  tags = var.tags
}

resource "aws_cloudwatch_event_rule" "expire" {
  count = var.incident_response_enabled ? 1 : 0

  name                = "${var.name}-expire"
  description         = "Remove MirrorScope incident mirror sessions whose time is up"
  schedule_expression = "rate(${var.expiry_check_minutes} minute${var.expiry_check_minutes == 1 ? "" : "s"})"

  tags = var.tags
}

locals {
  rules = concat(aws_cloudwatch_event_rule.instance_running, aws_cloudwatch_event_rule.tag_change,
  aws_cloudwatch_event_rule.guardduty, aws_cloudwatch_event_rule.expire)
}

resource "aws_cloudwatch_event_target" "this" {
  count = length(local.rules)

  rule      = local.rules[count.index].name
  target_id = "mirror-session"
  arn       = aws_lambda_function.this.arn

  retry_policy {
    maximum_event_age_in_seconds = 3600
    maximum_retry_attempts       = 8
  }

  dead_letter_config {
    arn = aws_sqs_queue.dlq.arn
  }
}

resource "aws_lambda_permission" "events" {
  count = length(local.rules)

  statement_id  = "AllowEventBridge-${local.rules[count.index].name}"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this.function_name
  principal     = "events.amazonaws.com"
  source_arn    = local.rules[count.index].arn
}

data "aws_iam_policy_document" "dlq" {
  count = length(local.rules) > 0 ? 1 : 0

  statement {
    sid       = "EventBridgeDeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.dlq.arn]

    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [for r in local.rules : r.arn]
    }
  }
}

resource "aws_sqs_queue_policy" "dlq" {
  count = length(local.rules) > 0 ? 1 : 0

  queue_url = aws_sqs_queue.dlq.id
  policy    = data.aws_iam_policy_document.dlq[0].json
}

# ---------------------------------------------------------------------------------------------
# Execution role: least privilege (see docs/deploy.md, "IAM")
# ---------------------------------------------------------------------------------------------

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "this" {
  name               = "${var.name}-lambda"
  assume_role_policy = data.aws_iam_policy_document.assume.json

  tags = var.tags
}

data "aws_iam_policy_document" "this" {
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.this.arn}:*"]
  }

  statement {
    sid = "DescribeInstancesAndSessions"
    # Describe* calls do not support resource-level permissions.
    actions   = ["ec2:DescribeInstances", "ec2:DescribeInstanceTypes", "ec2:DescribeTrafficMirrorSessions"]
    resources = ["*"]
  }

  statement {
    sid       = "DeleteOnlyOurSessions"
    actions   = ["ec2:DeleteTrafficMirrorSession"]
    resources = ["${local.arn_prefix}:traffic-mirror-session/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/ManagedBy"
      values   = ["mirrorscope"]
    }
  }

  statement {
    sid     = "CreateSessionToTheTargetWithTheFilter"
    actions = ["ec2:CreateTrafficMirrorSession"]
    resources = [
      "${local.arn_prefix}:traffic-mirror-session/*",
      "${local.arn_prefix}:traffic-mirror-target/${var.traffic_mirror_target_id}",
      "${local.arn_prefix}:traffic-mirror-filter/${var.traffic_mirror_filter_id}",
      "${local.arn_prefix}:network-interface/*",
    ]
  }

  statement {
    sid       = "TagSessionsOnCreate"
    actions   = ["ec2:CreateTags"]
    resources = ["${local.arn_prefix}:traffic-mirror-session/*"]

    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["CreateTrafficMirrorSession"]
    }
  }

  statement {
    sid       = "DeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.dlq.arn]
  }

  statement {
    sid       = "DecryptEnvironment"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
  }

  statement {
    sid = "Tracing"
    # X-Ray trace submission does not support resource-level permissions.
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "this" {
  name   = "mirror-session-automation"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.this.json
}

resource "aws_iam_role_policy_attachment" "vpc" {
  count = local.in_vpc ? 1 : 0

  role       = aws_iam_role.this.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}
