"""S3 sink: records -> Parquet (or gzip JSON lines) files under
``<prefix><type>/dt=YYYY-MM-DD/hour=HH/`` for Athena.

Every finished file goes to the local spool first (fsynced), then to S3 with server-side
encryption (SSE-KMS with the given key, else SSE-S3/AES256), then leaves the spool. Only
boto3 calls live here; batching and naming are in batching.py, encoding in parquet.py.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from stream_app.datadir import default_data_dir
from stream_app.sinks.batching import Batcher, Bounds, Chunk, RecordKind, default_kinds
from stream_app.sinks.parquet import FORMATS, encode
from stream_app.sinks.spool import Spool

log = logging.getLogger("mirrorscope.sink.s3")

CONTENT_TYPES = {"parquet": "application/vnd.apache.parquet", "jsonl.gz": "application/x-ndjson"}


@dataclass
class S3Settings:
    bucket: str
    prefix: str = ""
    fmt: str = "parquet"
    kms_key_id: str | None = None
    data_dir: Path = field(default_factory=default_data_dir)
    spool_max_bytes: int = 1 << 30
    bounds: Bounds = Bounds()
    endpoint_url: str | None = None
    region: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 5
    """Attempts per upload, the first included (boto3 standard mode: exponential backoff with
    jitter between them)."""
    backoff_max_s: float = 30.0
    """Longest wait between two rounds of re-sending the spool after failures."""

    @classmethod
    def from_env(cls, environ=None, **over) -> "S3Settings":
        env = os.environ if environ is None else environ
        kw = dict(bucket=env.get("MIRRORSCOPE_S3_BUCKET", ""),
                  prefix=env.get("MIRRORSCOPE_S3_PREFIX", ""),
                  kms_key_id=env.get("MIRRORSCOPE_S3_KMS_KEY_ID") or None,
                  data_dir=default_data_dir(env),
                  endpoint_url=env.get("MIRRORSCOPE_S3_ENDPOINT_URL") or None,
                  region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None)
        kw.update({k: v for k, v in over.items() if v is not None})
        return cls(**kw)


def make_s3_client(s: S3Settings):
    import boto3
    from botocore.config import Config
    cfg = Config(connect_timeout=s.connect_timeout, read_timeout=s.read_timeout,
                 retries={"mode": "standard", "total_max_attempts": s.max_attempts})
    return boto3.client("s3", endpoint_url=s.endpoint_url, region_name=s.region, config=cfg)


def sse_args(kms_key_id: str | None) -> dict[str, str]:
    """Encryption is never left to the bucket default alone."""
    if kms_key_id:
        # with an S3 Bucket Key, as the Terraform bucket's default: far fewer KMS requests
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id, "BucketKeyEnabled": True}
    return {"ServerSideEncryption": "AES256"}


class S3Sink:
    """Feeds records in, keeps the spool flowing to S3, and says which offsets are safe to
    commit (``on_durable`` per file, ``committable`` for all): everything before the first
    record not yet durable."""

    def __init__(self, settings: S3Settings, client=None, clock=time.monotonic,
                 on_durable: Callable[[str, int, int], None] | None = None):
        if settings.fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}")
        if not settings.bucket:
            raise ValueError("no bucket (MIRRORSCOPE_S3_BUCKET or --bucket)")
        self.s = settings
        self.client = client if client is not None else make_s3_client(settings)
        self.clock = clock
        self.on_durable = on_durable
        """Called with (source, partition, next offset) as each file becomes durable; the
        consumer commits there (it must raise, stopping the sink, if the commit fails)."""
        self.batcher = Batcher(settings.bounds)
        self.spool = Spool(Path(settings.data_dir) / "spool", settings.spool_max_bytes)
        self._durable: dict[tuple[str, int], int] = {}  # (source, partition) -> next offset
        self._retry_at = 0.0
        self._backoff = 0.0
        self.uploaded_files = 0
        self.uploaded_records = 0
        self.upload_failures = 0
        self.records_in = 0
        leftovers = self.spool.pending()
        if leftovers:
            log.info("re-sending %d spooled files from an earlier run", len(leftovers))
            self.drain(force=True)

    # -- records in ------------------------------------------------------------------------
    def add(self, kind: RecordKind, source: str, partition: int, offset: int, record) -> None:
        self.records_in += 1
        done = self.batcher.add(kind, source, partition, offset, record, self.clock())
        if done:
            self._finish(done)

    def poll(self) -> None:
        """Call often: closes files that reached their age, re-sends the spool when due."""
        done = self.batcher.poll(self.clock())
        if done:
            self._finish(done)
        elif self.spool_pending:
            self.drain()

    def flush(self) -> None:
        """Close every open file (shutdown, or before committing everything)."""
        self._finish(self.batcher.flush())

    def revoke(self, source: str, partition: int) -> None:
        self.batcher.discard(source, partition)
        self._durable.pop((source, partition), None)

    def committable(self) -> dict[tuple[str, int], int]:
        """(source, partition) -> offset to commit (the next one to read on a restart)."""
        out = dict(self._durable)
        out.update(self.batcher.open_first_offsets())
        return out

    # -- files out -------------------------------------------------------------------------
    def _finish(self, chunks: Iterable[Chunk]) -> None:
        for ch in chunks:
            key = ch.key(self.s.prefix, self.s.fmt)
            data = encode(ch.records, ch.kind.struct_type, self.s.fmt)
            meta = ch.metadata()
            if not self.spool.put(key, data, meta, len(ch.records)):
                # Full spool: one direct attempt, else the file is dropped (counted, logged).
                if not self._put(key, data, meta):
                    log.error("dropped %s: spool full and S3 unreachable", key)
            self._durable[(ch.source, ch.partition)] = ch.last_offset + 1
            if self.on_durable is not None:
                # Commit before the next file of this partition is written: then at most one
                # durable-but-uncommitted file exists per partition, and a replay (which
                # starts at its first offset) rewrites exactly that key.
                self.on_durable(ch.source, ch.partition, ch.last_offset + 1)
        self.drain()

    @property
    def spool_pending(self) -> bool:
        return self.spool.bytes > 0

    def _put(self, key: str, data: bytes, metadata: dict[str, str]) -> bool:
        try:
            self.client.put_object(Bucket=self.s.bucket, Key=key, Body=data, Metadata=metadata,
                                   ContentType=CONTENT_TYPES[self.s.fmt], **sse_args(self.s.kms_key_id))
        except Exception as exc:  # botocore's connection, timeout and service errors alike
            self.upload_failures += 1
            log.warning("upload of %s failed: %s", key, exc)
            return False
        self.uploaded_files += 1
        self.uploaded_records += int(metadata.get("mirrorscope-records", 0))
        return True

    def drain(self, force: bool = False) -> bool:
        """Send spooled files, oldest first; stop at the first failure and back off
        (exponentially, up to backoff_max_s). True when the spool is empty."""
        now = self.clock()
        if not force and now < self._retry_at:
            return False
        for entry in self.spool.pending():
            if not self._put(entry.key, entry.read(), entry.metadata):
                self._backoff = min(max(self._backoff * 2, 0.5), self.s.backoff_max_s)
                self._retry_at = self.clock() + self._backoff
                return False
            self.spool.remove(entry)
        self._backoff = 0.0
        self._retry_at = 0.0
        return True

    def close(self, timeout: float = 60.0) -> bool:
        """Flush, then keep re-sending the spool for up to ``timeout`` seconds. Whatever is
        still spooled is sent by the next run (same data dir). True when nothing is left."""
        self.flush()
        deadline = self.clock() + timeout
        while not self.drain(force=True):
            if self.clock() >= deadline:
                log.warning("S3 still unreachable: %d bytes stay in %s for the next run",
                            self.spool.bytes, self.spool.dir)
                return False
            time.sleep(min(self._backoff or 0.5, max(0.0, deadline - self.clock())))
        return True

    def stats(self) -> dict:
        return {"records_in": self.records_in, "uploaded_files": self.uploaded_files,
                "uploaded_records": self.uploaded_records, "upload_failures": self.upload_failures,
                "spool_bytes": self.spool.bytes, "spool_dropped_files": self.spool.dropped_files,
                "spool_dropped_records": self.spool.dropped_records}


class S3Outputs:
    """Same interface as embedded.LocalOutputs (write(results) / close()): embedded mode's
    results to S3. Each record type is one source stream ("embedded", partition 0) whose
    offsets count its records, so analysing the same capture again rewrites the same keys."""

    def __init__(self, settings: S3Settings, client=None, kinds: dict[str, RecordKind] | None = None,
                 source: str = "embedded"):
        self.sink = S3Sink(settings, client)
        self.kinds = kinds or default_kinds()
        self.source = source
        self._offsets = {name: 0 for name in self.kinds}

    def write(self, results) -> None:
        for name, kind in self.kinds.items():
            for rec in getattr(results, name, None) or ():
                self.sink.add(kind, self.source, 0, self._offsets[name], rec)
                self._offsets[name] += 1
        self.sink.poll()

    def close(self) -> dict[str, str]:
        self.sink.close()
        prefix = self.sink.s.prefix
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return {f"s3_{name}": f"s3://{self.sink.s.bucket}/{prefix}{name}/" for name in self.kinds}
