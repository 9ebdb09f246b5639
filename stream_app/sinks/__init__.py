"""Where records leave the core: local files (embedded mode), later S3 and CloudWatch."""
