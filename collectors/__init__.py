"""Everything before the broker: capture readers, decoding, flow keys, (later) sources and publishers."""
