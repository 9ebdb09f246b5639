"""The flow codec: how one flow's state becomes bytes in the store and back.

A blob is ``version (1 byte) | tag (16 bytes) | body``:

- the body is msgpack of typed records (msgspec Structs): ``FlowState`` (stream_app/core/
  flowtable.py) holding the analyzer's own tagged Struct (``HttpAnalyzerState`` and whatever
  the analyzers registered in stream_app/core/protocols.py declare as their ``State``). Each
  class has its ``to_state()`` and ``from_state(...)`` beside it, so a class and its stored
  form change together. The table-wide objects a flow points to (the L7 engine, its statistics
  and configuration, the flow table's configuration) are never stored: ``from_state`` binds
  the restoring table's own. Decoding is strict (msgspec's typed decoder): it makes ints,
  bytes, strings, lists and those Structs, never an object of any other type, so restoring a
  state cannot run code whatever its bytes say;
- the tag is a keyed BLAKE2b of the version byte and the body: without the state key nobody
  can write a blob a worker accepts (defence in depth), and the version cannot be changed
  without breaking it;
- the version byte says which format the body has. This release writes 2 and reads 2; it
  reads the state of the release before it (version 1: a tag and a pickle, with no version
  byte; the partition's Meta says which) through a restricted unpickler that knows only the
  core classes of that release (``_V1Unpickler``), and converts it to version-2 records
  straight away. Any other version, or a blob whose tag does not verify, raises StateError.

Compatibility rule for later releases: a field added to a state Struct goes at its end with a
default (older blobs then still decode); renaming, removing or reordering fields, or changing
their meaning, takes a new version number and a reader for the old one here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import io
import pickle
import threading
from collections import deque
from typing import Union

import msgspec

from stream_app.core.flowtable import Flow, FlowState

_FLOW_DEFAULTS = tuple(fd for fd in dataclasses.fields(Flow)
                       if fd.default is not dataclasses.MISSING)
from stream_app.core.processor import Processor

TAG_LEN = 16
VERSION = 2
"""The flow blob format this release writes."""
READS = (1, 2)
"""The formats it reads (the partition Meta's ``version`` says which one its blobs are)."""
_HEAD = bytes([VERSION])


class StateError(Exception):
    """A stored state that cannot be used (bad tag, other version, malformed records)."""


def _formats():
    """The analyzer registry (stream_app/core/protocols.py) -> the stored flow's type, with
    ``l7`` narrowed to None, False or one of the analyzers' tagged State Structs."""
    from stream_app.core.l7 import analyzer_classes
    by_state = {}
    for c in analyzer_classes():
        st = _state_type(c)
        if st in by_state:
            raise TypeError(f"{c.__name__} and {by_state[st].__name__} share a state type")
        by_state[st] = c
    tags = [st.__struct_config__.tag for st in by_state]
    if len(set(tags)) != len(tags):
        raise TypeError(f"analyzer state tags must differ: {tags}")
    union = Union[tuple(by_state) + (bool, None)]
    stored = msgspec.defstruct("StoredFlow", [("l7", union)], bases=(FlowState,),
                               array_like=True, gc=False)
    return stored, by_state


def _state_type(cls: type) -> type:
    """An analyzer's stored form: its ``State`` attribute, else its ``to_state``'s declared
    return type; a tagged msgspec Struct either way."""
    st = getattr(cls, "State", None)
    if st is None and hasattr(cls, "to_state"):
        from typing import get_type_hints
        try:
            st = get_type_hints(cls.to_state).get("return")
        except Exception:  # noqa: BLE001 - an unresolvable annotation: reported below
            st = None
    if not (isinstance(st, type) and issubclass(st, msgspec.Struct)
            and st.__struct_config__.tag is not None and hasattr(cls, "from_state")):
        raise TypeError(
            f"analyzer {cls.__module__}.{cls.__name__} cannot be stored: it needs a State "
            "attribute (a msgspec Struct with tag=<protocol>), to_state() and "
            "from_state(state, l7, flow) (docs/architecture.md, 'How a flow's state is stored')")
    return st


class Codec:
    """Encodes flows as signed, versioned typed records, and reads them back."""

    def __init__(self, key: bytes):
        if not key:
            raise ValueError("a state key is required (MIRRORSCOPE_STATE_KEY)")
        self.key = key
        self._mac = hashlib.blake2b(key=key[:64], digest_size=TAG_LEN)
        self._mac_v2 = self._mac.copy()
        self._mac_v2.update(_HEAD)
        self._stored, self._analyzers = _formats()
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(type=self._stored)

    def _tag(self, data: bytes) -> bytes:
        """The tag of version-1 blobs (over the pickle alone)."""
        h = self._mac.copy()
        h.update(data)
        return h.digest()

    # -- writing ------------------------------------------------------------------------------
    def encoder(self, proc: Processor):
        """A function encoding one flow of ``proc``'s table at a time (version 2)."""
        encode = self._encoder.encode
        mac = self._mac_v2

        def dumps(flow: Flow) -> bytes:
            body = encode(flow.to_state())
            h = mac.copy()
            h.update(body)
            return _HEAD + h.digest() + body
        return dumps

    pickler = encoder
    """The previous codec's name for ``encoder`` (nothing is pickled)."""

    def dumps(self, flow: Flow, proc: Processor) -> bytes:
        return self.encoder(proc)(flow)

    # -- reading ------------------------------------------------------------------------------
    def loads(self, blob: bytes, proc: Processor, version: int = VERSION) -> Flow:
        return self.loads_many([blob], proc, version)[0]

    def loads_many(self, blobs, proc: Processor, version: int = VERSION) -> list[Flow]:
        """Flows from their blobs, written in format ``version`` (the partition Meta's)."""
        if version == 1:
            return self._loads_v1(blobs, proc)
        if version != VERSION:
            raise StateError(f"flow state format {version}: this worker reads {READS}")
        decode = self._decoder.decode
        mac = self._mac_v2
        l7 = proc.l7
        analyzers = self._analyzers
        from_state = Flow.from_state
        out = []
        for blob in blobs:
            blob = bytes(blob)
            if blob[:1] != _HEAD:
                raise StateError(f"flow state format {blob[:1].hex() or 'none'}: this worker "
                                 f"reads {READS}")
            body = blob[1 + TAG_LEN:]
            h = mac.copy()
            h.update(body)
            if not hmac.compare_digest(blob[1:1 + TAG_LEN], h.digest()):
                raise StateError("flow state failed its integrity check (another state key?)")
            try:
                out.append(from_state(decode(body), l7, analyzers))
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError, IndexError,
                    KeyError, TypeError) as exc:
                # Signed with our key yet not a state this release can use.
                raise StateError(f"flow state unreadable: {exc}") from None
        return out

    def _loads_v1(self, blobs, proc: Processor) -> list[Flow]:  # noqa: C901
        """Version 1 (the pickles of the release before): tag verified first, then read by
        an unpickler that can build only that release's core classes, converted to version-2
        records (the same strict decoding as any blob) and flows built from those."""
        shared = _shared(proc)
        out = []
        encode, decode = self._encoder.encode, self._decoder.decode
        for blob in blobs:
            blob = bytes(blob)
            tag, data = blob[:TAG_LEN], blob[TAG_LEN:]
            if not hmac.compare_digest(tag, self._tag(data)):
                raise StateError("flow state failed its integrity check (another state key?)")
            try:
                f = _V1Unpickler(io.BytesIO(data), shared).load()
                if type(f) is not Flow:
                    raise StateError(f"version-1 flow state holds a {type(f).__name__}")
                for fd in _FLOW_DEFAULTS:  # fields newer than that release: their defaults
                    if not hasattr(f, fd.name):
                        setattr(f, fd.name, fd.default)
                if f.l7_held is not None and not isinstance(f.l7_held, list):
                    f.l7_held = [(f.l7_held, True)]  # one client record (before 2026-12)
                st = decode(encode(f.to_state()))
                out.append(Flow.from_state(st, proc.l7, self._analyzers))
            except StateError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure of an old blob: unreadable
                raise StateError(f"version-1 flow state unreadable: "
                                 f"{type(exc).__name__}: {exc}") from None
        return out


class _V1Unpickler(pickle.Unpickler):
    """Reads the release-1 pickles and nothing else: the only globals a pickle may name are
    that release's flow classes, collections.deque and the codec's shared-object reference
    (answered with the restoring table's own objects). No other callable is reachable, so
    no ``__reduce__`` trick can run anything; the objects made are converted to typed
    records at once."""

    _ALLOWED = {
        ("stream_app.core.flowtable", "Flow"),
        ("stream_app.core.l7", "HttpAnalyzer"),
        ("stream_app.core.http", "HttpConversation"),
        ("stream_app.core.http", "MessageStream"),
        ("stream_app.core.http", "Txn"),
        ("stream_app.core.reassembly", "Direction"),
        ("schemas.records", "PacketRecord"),
        ("collections", "deque"),
    }

    def __init__(self, file, shared: dict[str, object]):
        super().__init__(file)
        self._shared = shared

    def find_class(self, module: str, name: str):
        if (module, name) == ("stream_app.state.codec", "_shared_ref"):
            shared = self._shared

            def shared_ref(n: str):
                try:
                    return shared[n]
                except KeyError:
                    raise StateError(f"flow state refers to {n!r}, which this worker "
                                     "lacks") from None
            return shared_ref
        if (module, name) not in self._ALLOWED:
            raise StateError(f"version-1 flow state names {module}.{name}: refused")
        if module == "collections":
            return deque
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise StateError("version-1 flow state holds a persistent id: refused")


def _shared(proc: Processor) -> dict[str, object]:
    out: dict[str, object] = {"flow_config": proc.flows.config}
    if proc.l7 is not None:
        out.update(l7=proc.l7, l7_stats=proc.l7.stats, l7_config=proc.l7.config,
                   http_config=proc.l7.config.http)
    return out
