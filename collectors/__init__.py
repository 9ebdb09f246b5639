"""Everything before the broker: capture readers, decoding, flow keys, and `mirrorscope collect`
(UDP sources, the mirror filter, partitioning, Kafka/Kinesis publishers)."""
