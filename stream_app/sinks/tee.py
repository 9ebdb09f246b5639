"""Several outputs as one (write(results) / close()), for embedded mode: LocalOutputs plus
S3Outputs and/or CloudWatchOutputs. Attributes not defined here (``summary``,
``http_summary`` ...) come from the first output."""

from __future__ import annotations

import os
from pathlib import Path


class TeeOutputs:
    def __init__(self, primary, *others):
        self.outputs = [primary, *others]

    def write(self, results) -> None:
        for o in self.outputs:
            o.write(results)

    def close(self) -> dict[str, str]:
        out: dict[str, str] = {}
        errors = []
        for o in self.outputs:  # close every one even if one fails
            try:
                out.update(o.close())
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
        if errors:
            raise errors[0]
        return out

    def __getattr__(self, name):
        return getattr(self.outputs[0], name)


def aws_outputs(s3_bucket: str | None = None, s3_prefix: str | None = None,
                kms_key_id: str | None = None, s3_format: str = "parquet",
                cloudwatch: bool = False, data_dir: Path | None = None) -> list:
    """The AWS outputs `mirrorscope analyze --s3-bucket B --cloudwatch` asks for; settings not
    given come from the MIRRORSCOPE_* environment like the sink commands'. The spool defaults
    to MIRRORSCOPE_DATA_DIR, else ~/.cache/mirrorscope."""
    out = []
    if s3_bucket:
        from stream_app.sinks.s3 import S3Outputs, S3Settings
        dd = data_dir or Path(os.environ.get("MIRRORSCOPE_DATA_DIR")
                              or Path.home() / ".cache" / "mirrorscope")
        out.append(S3Outputs(S3Settings.from_env(bucket=s3_bucket, prefix=s3_prefix,
                                                 kms_key_id=kms_key_id, fmt=s3_format,
                                                 data_dir=dd)))
    if cloudwatch:
        from stream_app.sinks.cloudwatch import CloudWatchOutputs, CloudWatchSettings
        out.append(CloudWatchOutputs(CloudWatchSettings.from_env()))
    return out
