output "traffic_mirror_target_id" {
  description = "Mirror target of the collectors' NLB (use it for sessions made elsewhere)."
  value       = module.mirror_target.traffic_mirror_target_id
}

output "traffic_mirror_filter_id" {
  description = "Mirror filter with var.filter_rules."
  value       = module.mirror_filter.traffic_mirror_filter_id
}

output "mirror_session_ids" {
  description = "Static mirror sessions, keyed like var.mirror_sessions."
  value       = module.mirror_sessions.session_ids
}

output "automation_function_name" {
  description = "Lambda that mirrors new or opted-in instances."
  value       = module.mirror_automation.lambda_function_name
}

output "collectors_autoscaling_group" {
  description = "Autoscaling group of the collectors."
  value       = module.collectors.autoscaling_group_name
}

output "records_bucket" {
  description = "Bucket of the Parquet records."
  value       = module.storage.bucket_name
}

output "glue_database" {
  description = "Glue database to query in Athena."
  value       = module.storage.glue_database_name
}

output "alarm_topic_arn" {
  description = "SNS topic of the alarms."
  value       = module.alarms.sns_topic_arn
}

output "helm_values" {
  description = "Values that tie the Helm chart to this stack: `terraform output -json helm_values > values.json`, then `helm install ... -f values.json` (null entries remove a key, so the chart default applies)."
  value = {
    serviceAccount = {
      name    = var.service_account_name
      roleArn = module.iam.stream_app_role_arn
    }
    stream = {
      type       = (module.stream.stream_type == "msk" ? "kafka" : "kinesis")
      partitions = module.stream.partition_count
      kafka = {
        bootstrapServers = module.stream.kafka_bootstrap_brokers
        securityProtocol = (module.stream.stream_type == "msk" ? "SASL_SSL" : "PLAINTEXT")
        saslMechanism    = (module.stream.stream_type == "msk" ? "AWS_MSK_IAM" : "")
      }
      kinesis = {
        streamName = module.stream.kinesis_stream_name
      }
    }
    aws = {
      region = var.region
    }
    worker = {
      autoscaling = {
        keda = { triggerAuthentication = { podIdentity = { roleArn = module.iam.keda_role_arn } } }
      }
    }
    sinks = {
      s3         = { bucket = module.storage.bucket_name }
      cloudwatch = { logGroup = module.alarms.alert_log_group_name }
    }
  }
}
