"""The stream runtime, between a broker adapter (stream_app/adapters) and the core: partition
ownership, checkpoints tied to offsets, the core in this process or in N subprocesses, result
outputs, declared metrics and the health/metrics server."""
