# Columns of the record contracts, one list per result kind (schemas/kinds.py). flows and http are the fields of schemas/jsonschema/
# flow_record.json and http_transaction.json (integer -> bigint, number -> double, enum -> string,
# array of strings -> array<string>); tests/deploy checks they stay equal. The flow table keeps the
# VPC Flow Logs v5 field names, so existing Athena queries run with only the table name changed.
locals {
  flow_columns = [
    { name = "version", type = "bigint", comment = null },
    { name = "account_id", type = "string", comment = null },
    { name = "interface_id", type = "string", comment = null },
    { name = "srcaddr", type = "string", comment = null },
    { name = "dstaddr", type = "string", comment = null },
    { name = "srcport", type = "bigint", comment = null },
    { name = "dstport", type = "bigint", comment = null },
    { name = "protocol", type = "bigint", comment = null },
    { name = "packets", type = "bigint", comment = null },
    { name = "bytes", type = "bigint", comment = null },
    { name = "start", type = "bigint", comment = null },
    { name = "end", type = "bigint", comment = null },
    { name = "action", type = "string", comment = null },
    { name = "log_status", type = "string", comment = null },
    { name = "vpc_id", type = "string", comment = null },
    { name = "subnet_id", type = "string", comment = null },
    { name = "instance_id", type = "string", comment = null },
    { name = "tcp_flags", type = "bigint", comment = null },
    { name = "type", type = "string", comment = null },
    { name = "pkt_srcaddr", type = "string", comment = null },
    { name = "pkt_dstaddr", type = "string", comment = null },
    { name = "region", type = "string", comment = null },
    { name = "az_id", type = "string", comment = null },
    { name = "sublocation_type", type = "string", comment = null },
    { name = "sublocation_id", type = "string", comment = null },
    { name = "pkt_src_aws_service", type = "string", comment = null },
    { name = "pkt_dst_aws_service", type = "string", comment = null },
    { name = "flow_direction", type = "string", comment = null },
    { name = "traffic_path", type = "bigint", comment = null },
    { name = "flow_id", type = "string", comment = null },
    { name = "community_id", type = "string", comment = null },
    { name = "vni", type = "bigint", comment = null },
    { name = "mirror_source", type = "string", comment = null },
    { name = "orig_pkts", type = "bigint", comment = null },
    { name = "orig_bytes", type = "bigint", comment = null },
    { name = "resp_pkts", type = "bigint", comment = null },
    { name = "resp_bytes", type = "bigint", comment = null },
    { name = "duration", type = "double", comment = null },
    { name = "conn_state", type = "string", comment = null },
    { name = "history", type = "string", comment = null },
    { name = "app_proto", type = "string", comment = null },
    { name = "end_reason", type = "string", comment = null },
    { name = "truncated_pkts", type = "bigint", comment = null },
    { name = "fragment_pkts", type = "bigint", comment = null },
    { name = "schema_version", type = "bigint", comment = null },
    { name = "start_time", type = "double", comment = "Unix seconds with fraction (schema_version 2)" },
    { name = "end_time", type = "double", comment = "Unix seconds with fraction (schema_version 2)" },
    { name = "app_proto_source", type = "string", comment = "content or port (schema_version 3)" },
    { name = "handshake_rtt_resp", type = "double", comment = "TCP SYN to SYN-ACK seconds (schema_version 3)" },
    { name = "handshake_rtt_orig", type = "double", comment = "TCP SYN-ACK to ACK seconds (schema_version 3)" },
    { name = "orig_retrans_pkts", type = "bigint", comment = "schema_version 3" },
    { name = "orig_retrans_bytes", type = "bigint", comment = "schema_version 3" },
    { name = "resp_retrans_pkts", type = "bigint", comment = "schema_version 3" },
    { name = "resp_retrans_bytes", type = "bigint", comment = "schema_version 3" },
    { name = "orig_ooo_pkts", type = "bigint", comment = "schema_version 3" },
    { name = "resp_ooo_pkts", type = "bigint", comment = "schema_version 3" },
    { name = "orig_zero_windows", type = "bigint", comment = "schema_version 3" },
    { name = "resp_zero_windows", type = "bigint", comment = "schema_version 3" },
    { name = "missed_bytes", type = "bigint", comment = "schema_version 3" },
  ]

  http_columns = [
    { name = "http_id", type = "string", comment = null },
    { name = "ts", type = "double", comment = null },
    { name = "community_id", type = "string", comment = null },
    { name = "vni", type = "bigint", comment = null },
    { name = "srcaddr", type = "string", comment = null },
    { name = "srcport", type = "bigint", comment = null },
    { name = "dstaddr", type = "string", comment = null },
    { name = "dstport", type = "bigint", comment = null },
    { name = "trans_depth", type = "bigint", comment = null },
    { name = "method", type = "string", comment = null },
    { name = "host", type = "string", comment = null },
    { name = "uri", type = "string", comment = null },
    { name = "version", type = "string", comment = null },
    { name = "user_agent", type = "string", comment = null },
    { name = "referrer", type = "string", comment = null },
    { name = "status_code", type = "bigint", comment = null },
    { name = "status_msg", type = "string", comment = null },
    { name = "request_body_len", type = "bigint", comment = null },
    { name = "response_body_len", type = "bigint", comment = null },
    { name = "request_content_type", type = "string", comment = null },
    { name = "response_content_type", type = "string", comment = null },
    { name = "latency", type = "double", comment = null },
    { name = "tags", type = "array<string>", comment = null },
    { name = "authorization", type = "string", comment = null },
    { name = "proxy_authorization", type = "string", comment = null },
    { name = "cookie", type = "string", comment = null },
    { name = "set_cookie", type = "string", comment = null },
    { name = "flow_direction", type = "string", comment = null },
    { name = "schema_version", type = "bigint", comment = null },
  ]

  # As schemas/jsonschema/alert.json (tests/test_athena_ddl.py keeps them equal).
  alert_columns = [
    { name = "alert_id", type = "string", comment = "Deterministic" },
    { name = "ts", type = "double", comment = "Unix seconds" },
    { name = "type", type = "string", comment = null },
    { name = "severity", type = "string", comment = null },
    { name = "source", type = "string", comment = null },
    { name = "targets", type = "array<string>", comment = null },
    { name = "vni", type = "bigint", comment = null },
    { name = "interface_id", type = "string", comment = null },
    { name = "window_start", type = "double", comment = "Unix seconds" },
    { name = "window_end", type = "double", comment = "Unix seconds" },
    { name = "evidence", type = "map<string,bigint>", comment = "Counts" },
    { name = "summary", type = "string", comment = null },
    { name = "schema_version", type = "bigint", comment = null },
  ]

  # As schemas/jsonschema/dns_transaction.json (tests/test_athena_ddl.py keeps them equal).
  dns_columns = [
    { name = "dns_id", type = "string", comment = null },
    { name = "ts", type = "double", comment = "Unix seconds" },
    { name = "community_id", type = "string", comment = null },
    { name = "vni", type = "bigint", comment = null },
    { name = "srcaddr", type = "string", comment = null },
    { name = "srcport", type = "bigint", comment = null },
    { name = "dstaddr", type = "string", comment = null },
    { name = "dstport", type = "bigint", comment = null },
    { name = "transport", type = "string", comment = null },
    { name = "trans_id", type = "bigint", comment = null },
    { name = "query", type = "string", comment = null },
    { name = "qclass", type = "bigint", comment = null },
    { name = "qtype", type = "bigint", comment = null },
    { name = "qtype_name", type = "string", comment = null },
    { name = "rcode", type = "bigint", comment = null },
    { name = "rcode_name", type = "string", comment = null },
    { name = "authoritative", type = "boolean", comment = null },
    { name = "truncated", type = "boolean", comment = null },
    { name = "recursion_desired", type = "boolean", comment = null },
    { name = "recursion_available", type = "boolean", comment = null },
    { name = "answers", type = "array<struct<name:string,type:string,ttl:bigint,data:string>>", comment = null },
    { name = "rtt", type = "double", comment = "Seconds from query to response" },
    { name = "tags", type = "array<string>", comment = null },
    { name = "flow_direction", type = "string", comment = null },
    { name = "schema_version", type = "bigint", comment = null },
  ]

  # As schemas/jsonschema/tls_handshake.json (tests/test_athena_ddl.py keeps them equal).
  tls_columns = [
    { name = "tls_id", type = "string", comment = null },
    { name = "ts", type = "double", comment = "Unix seconds" },
    { name = "community_id", type = "string", comment = null },
    { name = "vni", type = "bigint", comment = null },
    { name = "srcaddr", type = "string", comment = null },
    { name = "srcport", type = "bigint", comment = null },
    { name = "dstaddr", type = "string", comment = null },
    { name = "dstport", type = "bigint", comment = null },
    { name = "version", type = "string", comment = null },
    { name = "cipher", type = "string", comment = null },
    { name = "server_name", type = "string", comment = null },
    { name = "alpn_offered", type = "array<string>", comment = null },
    { name = "alpn", type = "string", comment = null },
    { name = "ja4", type = "string", comment = null },
    { name = "ja4s", type = "string", comment = null },
    { name = "resumed", type = "boolean", comment = null },
    { name = "established", type = "boolean", comment = null },
    { name = "alert", type = "string", comment = null },
    { name = "cert_chain", type = "array<struct<subject:string,issuer:string,serial:string,not_before:double,not_after:double,sans:array<string>,sha256:string,self_signed:boolean>>", comment = null },
    { name = "tags", type = "array<string>", comment = null },
    { name = "flow_direction", type = "string", comment = null },
    { name = "schema_version", type = "bigint", comment = null },
  ]

  # As schemas/jsonschema/ssh_session.json (tests/test_athena_ddl.py keeps them equal).
  ssh_columns = [
    { name = "ssh_id", type = "string", comment = null },
    { name = "ts", type = "double", comment = "Unix seconds" },
    { name = "community_id", type = "string", comment = null },
    { name = "vni", type = "bigint", comment = null },
    { name = "srcaddr", type = "string", comment = null },
    { name = "srcport", type = "bigint", comment = null },
    { name = "dstaddr", type = "string", comment = null },
    { name = "dstport", type = "bigint", comment = null },
    { name = "client", type = "string", comment = null },
    { name = "server", type = "string", comment = null },
    { name = "hassh", type = "string", comment = null },
    { name = "hassh_server", type = "string", comment = null },
    { name = "kex_alg", type = "string", comment = null },
    { name = "host_key_alg", type = "string", comment = null },
    { name = "cipher_alg", type = "string", comment = null },
    { name = "mac_alg", type = "string", comment = null },
    { name = "compression_alg", type = "string", comment = null },
    { name = "tags", type = "array<string>", comment = null },
    { name = "flow_direction", type = "string", comment = null },
    { name = "schema_version", type = "bigint", comment = null },
  ]
  tables = {
    flows  = { prefix = var.table_prefixes.flows, columns = lookup(var.table_columns, "flows", local.flow_columns), description = "MirrorScope flow records (VPC Flow Logs v5 fields + vni, community_id, Zeek conn fields)" }
    http   = { prefix = var.table_prefixes.http, columns = lookup(var.table_columns, "http", local.http_columns), description = "MirrorScope HTTP/1.x transactions" }
    alerts = { prefix = var.table_prefixes.alerts, columns = lookup(var.table_columns, "alerts", local.alert_columns), description = "MirrorScope alerts" }
    dns    = { prefix = var.table_prefixes.dns, columns = lookup(var.table_columns, "dns", local.dns_columns), description = "MirrorScope DNS transactions (UDP and TCP)" }
    tls    = { prefix = var.table_prefixes.tls, columns = lookup(var.table_columns, "tls", local.tls_columns), description = "MirrorScope TLS handshakes (JA4/JA4S, certificate chain)" }
    ssh    = { prefix = var.table_prefixes.ssh, columns = lookup(var.table_columns, "ssh", local.ssh_columns), description = "MirrorScope SSH sessions (banners, HASSH)" }
  }
}

resource "aws_glue_catalog_database" "this" {
  name        = var.glue_database_name
  description = "MirrorScope records in s3://${aws_s3_bucket.this.id}/"
}

resource "aws_glue_catalog_table" "this" {
  for_each = local.tables

  name          = each.key
  database_name = aws_glue_catalog_database.this.name
  description   = each.value.description
  table_type    = "EXTERNAL_TABLE"

  # Partition projection: Athena computes the dt/hour partitions, no crawler or MSCK REPAIR needed.
  parameters = {
    EXTERNAL                      = "TRUE"
    classification                = "parquet"
    "parquet.compression"         = "ZSTD"
    "projection.enabled"          = "true"
    "projection.dt.type"          = "date"
    "projection.dt.format"        = "yyyy-MM-dd"
    "projection.dt.range"         = "${var.projection_start_date},NOW"
    "projection.dt.interval"      = "1"
    "projection.dt.interval.unit" = "DAYS"
    "projection.hour.type"        = "integer"
    "projection.hour.range"       = "0,23"
    "projection.hour.digits"      = "2"
    "storage.location.template"   = "s3://${aws_s3_bucket.this.id}/${each.value.prefix}dt=$${dt}/hour=$${hour}/"
  }

  partition_keys {
    name = "dt"
    type = "string"
  }

  partition_keys {
    name = "hour"
    type = "string"
  }

  storage_descriptor {
    location      = "s3://${aws_s3_bucket.this.id}/${each.value.prefix}"
    input_format  = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"

    ser_de_info {
      serialization_library = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
      parameters = {
        "serialization.format" = "1"
      }
    }

    dynamic "columns" {
      for_each = each.value.columns
      content {
        name    = columns.value.name
        type    = columns.value.type
        comment = columns.value.comment
      }
    }
  }
}
