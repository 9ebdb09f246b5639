"""Everything after the broker: the core, its adapters (embedded, Faust, Kinesis), state and sinks."""
