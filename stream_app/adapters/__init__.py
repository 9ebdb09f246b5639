"""What feeds the runtime: the Faust app on Kafka (faust_app.py), the Kinesis consumer
(kinesis.py, its shard leases in kinesis_leases.py) and the embedded runner (embedded.py: a
capture file or the collector's socket straight into the core, no broker)."""
