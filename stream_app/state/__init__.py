"""Durable per-partition state: the partition's core made snapshot-able (partition.py), the
flow codec (codec.py), where snapshots live (store.py: Redis or memory) and the detectors'
shared state in Redis (detectors.py). No broker code here."""
