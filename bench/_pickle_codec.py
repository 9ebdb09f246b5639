"""The flow codec of the release before typed state (commit 1ca7910, stream_app/state/codec.py),
kept here only as bench/bench_state.py's baseline: pickle with a dispatch table for the shared
objects, and a keyed BLAKE2b tag. Never used to read state (stream_app/state/codec.py reads its
blobs without general unpickling)."""

from __future__ import annotations

import hashlib
import hmac
import io
import pickle
import threading

from stream_app.core.processor import Processor

TAG_LEN = 16


class StateError(Exception):
    """A stored state that cannot be used (bad tag, other version)."""


_loading = threading.local()


def _shared_ref(name: str):
    """Unpickling a reference to a table-wide object: the restoring table's own."""
    try:
        return _loading.shared[name]
    except (AttributeError, KeyError):
        raise StateError(f"flow state refers to {name!r}, which this worker lacks") from None


class Codec:
    """Pickles flows with references to their table's shared objects, and signs them."""

    def __init__(self, key: bytes):
        if not key:
            raise ValueError("a state key is required (MIRRORSCOPE_STATE_KEY)")
        self.key = key

    def _tag(self, data: bytes) -> bytes:
        return hashlib.blake2b(data, key=self.key[:64], digest_size=TAG_LEN).digest()

    def pickler(self, proc: Processor):
        """A function pickling one object of ``proc``'s table at a time. The shared objects'
        types go in the pickler's dispatch table, which C consults by type, so the objects
        of a flow cost no Python call each."""
        shared = _shared(proc)
        names = {id(o): n for n, o in shared.items()}

        def reduce(o):
            n = names.get(id(o))
            if n is None:  # another instance of a shared object's type: pickled as usual
                return o.__reduce_ex__(5)
            return _shared_ref, (n,)
        table = {type(o): reduce for o in shared.values()}
        buf = io.BytesIO()
        tag = self._tag

        def dumps(obj) -> bytes:
            buf.seek(0)
            buf.truncate()
            p = pickle.Pickler(buf, protocol=5)
            p.dispatch_table = table
            p.dump(obj)
            data = buf.getvalue()
            return tag(data) + data
        return dumps

    def dumps(self, obj, proc: Processor) -> bytes:
        return self.pickler(proc)(obj)

    def loads(self, blob: bytes, proc: Processor):
        return self.loads_many([blob], proc)[0]

    def loads_many(self, blobs, proc: Processor) -> list:
        out = []
        _loading.shared = _shared(proc)
        try:
            for blob in blobs:
                tag, data = blob[:TAG_LEN], blob[TAG_LEN:]
                if not hmac.compare_digest(tag, self._tag(data)):
                    raise StateError("flow state failed its integrity check (another state key?)")
                out.append(pickle.loads(data))
        finally:
            _loading.shared = None
        return out


def _shared(proc: Processor) -> dict[str, object]:
    out: dict[str, object] = {"flow_config": proc.flows.config}
    if proc.l7 is not None:
        out.update(l7=proc.l7, l7_stats=proc.l7.stats, l7_config=proc.l7.config,
                   http_config=proc.l7.config.http)
    return out
