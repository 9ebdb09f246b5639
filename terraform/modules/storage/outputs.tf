output "bucket_name" {
  description = "Name of the records bucket (MIRRORSCOPE_S3_BUCKET)."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "ARN of the records bucket."
  value       = aws_s3_bucket.this.arn
}

output "table_prefixes" {
  description = "Key prefix of each record type in the bucket."
  value       = { for k, t in local.tables : k => t.prefix }
}

output "glue_database_name" {
  description = "Glue database of the Athena tables."
  value       = aws_glue_catalog_database.this.name
}

output "glue_table_names" {
  description = "Glue tables, keyed by record type (flows, http, alerts, dns, tls, ssh)."
  value       = { for k, t in aws_glue_catalog_table.this : k => t.name }
}
