"""The contracts between MirrorScope's stages (see records.py)."""

from schemas.records import (
    FLOW_RECORD_VERSION,
    HTTP_RECORD_VERSION,
    PACKET_BATCH_VERSION,
    SCHEMA_TYPES,
    FlowRecord,
    HttpTransaction,
    PacketBatch,
    PacketRecord,
)

__all__ = [
    "FLOW_RECORD_VERSION",
    "HTTP_RECORD_VERSION",
    "PACKET_BATCH_VERSION",
    "SCHEMA_TYPES",
    "FlowRecord",
    "HttpTransaction",
    "PacketBatch",
    "PacketRecord",
]
