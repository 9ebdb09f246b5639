variable "bucket_name" {
  description = "Name of the S3 bucket for flow records, HTTP transactions and alerts (Parquet, partitioned dt=/hour=)."
  type        = string
}

variable "kms_key_arn" {
  description = "ARN of the KMS key for the bucket's default encryption (SSE-KMS with an S3 bucket key)."
  type        = string
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete a bucket that still holds objects."
  type        = bool
  default     = false
}

variable "access_log_bucket" {
  description = "Name of an existing bucket that receives this bucket's server access logs; null disables access logging."
  type        = string
  default     = null
}

variable "access_log_prefix" {
  description = "Key prefix of this bucket's server access logs in access_log_bucket."
  type        = string
  default     = "s3-access/mirrorscope/"
}

variable "transition_to_infrequent_access_days" {
  description = "Days after which objects move to S3 Standard-IA (>= 30)."
  type        = number
  default     = 30
}

variable "transition_to_glacier_ir_days" {
  description = "Days after which objects move to S3 Glacier Instant Retrieval (still queryable by Athena)."
  type        = number
  default     = 90
}

variable "expiration_days" {
  description = "Days after which objects are deleted; null keeps them forever."
  type        = number
  default     = 395
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which overwritten or deleted object versions are removed."
  type        = number
  default     = 30
}

variable "glue_database_name" {
  description = "Name of the Glue database that holds the Athena tables."
  type        = string
  default     = "mirrorscope"

  validation {
    condition     = can(regex("^[a-z0-9_]+$", var.glue_database_name))
    error_message = "Glue/Athena database names are lower-case letters, digits and underscores."
  }
}

variable "table_prefixes" {
  description = "Key prefix in the bucket of each record type; the S3 sink writes <prefix>dt=YYYY-MM-DD/hour=HH/*.parquet."
  type = object({
    flows  = optional(string, "flows/")
    http   = optional(string, "http/")
    alerts = optional(string, "alerts/")
    dns    = optional(string, "dns/")
    tls    = optional(string, "tls/")
    ssh    = optional(string, "ssh/")
  })
  default = {}
}

variable "projection_start_date" {
  description = "First dt (YYYY-MM-DD) that Athena partition projection enumerates."
  type        = string
  default     = "2026-01-01"
}

variable "table_columns" {
  description = "Override the columns of a table (\"flows\", \"http\", \"alerts\", \"dns\", \"tls\", \"ssh\"); tables not listed use the built-in v1 contract columns (see schemas/ for the authoritative DDL)."
  type = map(list(object({
    name    = string
    type    = string
    comment = optional(string)
  })))
  default = {}
}

variable "tags" {
  description = "Tags to add to all resources."
  type        = map(string)
  default     = {}
}
