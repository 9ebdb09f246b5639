"""The UDP side: a SO_REUSEPORT socket with a large buffer, batched receives, kernel drops.

Python's socket module has no recvmmsg, and one recvfrom per datagram costs more than the
decoding does, so datagrams are read with libc's recvmmsg through ctypes: one system call and
one Python-to-C transition per up to ``vlen`` datagrams, into a preallocated buffer that the
C decoder reads in place (memoryview slices, no copies). Where recvmmsg is missing (not
Linux) a recvfrom_into loop is used.

Kernel drops: each socket's own drop counter (``drops`` in /proc/net/udp[6], found by the
socket's inode; it counts datagrams refused because the receive buffer was full) and the
namespace-wide ``Udp: RcvbufErrors`` from /proc/net/snmp.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket

SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_REUSEPORT = getattr(socket, "SO_REUSEPORT", 15)
MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)
MSG_TRUNC = getattr(socket, "MSG_TRUNC", 0x20)
SLOT = 9216  # the largest VXLAN datagram AWS sends is 9001 - 28 bytes (MTU 9001)
NAME = 32  # room for a sockaddr_in6 (28 bytes)


def open_socket(address: str, port: int, rcvbuf: int, reuseport: bool = True) -> tuple[socket.socket, int]:
    """A non-blocking UDP socket bound to (address, port); returns it and the receive buffer
    the kernel granted (SO_RCVBUFFORCE needs CAP_NET_ADMIN; otherwise net.core.rmem_max caps
    it)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuseport:
            s.setsockopt(socket.SOL_SOCKET, SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.bind((address, port))
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    # The kernel reports double the size asked for (its bookkeeping overhead).
    return s, s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2


class _IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.c_void_p), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


def _libc_recvmmsg():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.recvmmsg
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    return fn


_RECVMMSG = _libc_recvmmsg()


class Receiver:
    """Reads up to ``vlen`` datagrams per call. After ``recv()`` returned k > 0, datagram i
    is ``buf[i * SLOT : i * SLOT + length(i)]`` and its source address is ``source(i)``."""

    def __init__(self, sock: socket.socket, vlen: int = 128, force_fallback: bool = False):
        self.sock = sock
        self.fd = sock.fileno()
        self.vlen = vlen
        self.v6 = sock.family == socket.AF_INET6
        self._mem = ctypes.create_string_buffer(vlen * SLOT)
        self.buf = memoryview(self._mem).cast("B")
        self._names = ctypes.create_string_buffer(vlen * NAME)
        self.names = b""
        self.mmsg = _RECVMMSG is not None and not force_fallback
        if self.mmsg:
            self._iov = (_IOVec * vlen)()
            self._msgs = (_MMsgHdr * vlen)()
            base = ctypes.addressof(self._mem)
            nbase = ctypes.addressof(self._names)
            for i in range(vlen):
                self._iov[i].base = base + i * SLOT
                self._iov[i].len = SLOT
                h = self._msgs[i].hdr
                h.name = nbase + i * NAME
                # The kernel writes back the address length, which is the same for every
                # datagram of a socket (16 or 28), so this needs no reset between calls.
                h.namelen = NAME
                h.iov = ctypes.addressof(self._iov[i])
                h.iovlen = 1
            self._words = memoryview(self._msgs).cast("B").cast("I")
            self._stride = ctypes.sizeof(_MMsgHdr) // 4
            self._len_at = _MMsgHdr.len.offset // 4
            self._flags_at = _MsgHdr.flags.offset // 4
            self._msgs_ptr = ctypes.addressof(self._msgs)
        else:
            self._lens = [0] * vlen
            self._srcs: list[bytes] = [b""] * vlen

    def recv(self) -> int:
        """Datagrams read (0: none waiting). Raises OSError on socket errors other than
        EAGAIN/EINTR."""
        if self.mmsg:
            k = _RECVMMSG(self.fd, self._msgs_ptr, self.vlen, MSG_DONTWAIT, None)
            if k < 0:
                e = ctypes.get_errno()
                if e in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    return 0
                raise OSError(e, os.strerror(e))
            if k:
                self.names = self._names.raw[:k * NAME]
            return k
        k = 0
        rf = self.sock.recvfrom_into
        while k < self.vlen:
            try:
                n, addr = rf(self.buf[k * SLOT:(k + 1) * SLOT])
            except (BlockingIOError, InterruptedError):
                break
            self._lens[k] = n
            self._srcs[k] = socket.inet_pton(self.sock.family, addr[0])
            k += 1
        return k

    def length(self, i: int) -> int:
        """Bytes of datagram i; -1 when it did not fit in a slot (truncated)."""
        if self.mmsg:
            w = self._words
            n = w[i * self._stride + self._len_at]
            if n >= SLOT and w[i * self._stride + self._flags_at] & MSG_TRUNC:
                return -1
            return n
        n = self._lens[i]
        return -1 if n >= SLOT else n

    def lengths(self, k: int) -> list[int]:
        """Lengths of the first k datagrams (-1: truncated), in one pass."""
        if not self.mmsg:
            return [n if n < SLOT else -1 for n in self._lens[:k]]
        w = self._words
        st = self._stride
        la = self._len_at
        out = w[la:k * st:st].tolist()
        for i, n in enumerate(out):
            if n >= SLOT and w[i * st + self._flags_at] & MSG_TRUNC:
                out[i] = -1
        return out

    def sources(self, k: int) -> list[bytes]:
        """Outer source addresses (4 or 16 bytes) of the first k datagrams."""
        if not self.mmsg:
            return self._srcs[:k]
        nm = self.names
        if not self.v6:
            return [nm[o + 4:o + 8] for o in range(0, k * NAME, NAME)]
        out = []
        for o in range(0, k * NAME, NAME):
            fam = int.from_bytes(nm[o:o + 2], "little")
            if fam == socket.AF_INET:
                out.append(nm[o + 4:o + 8])
            else:
                a = nm[o + 8:o + 24]
                out.append(a[12:] if a[:12] == b"\0" * 10 + b"\xff\xff" else a)
        return out


def socket_inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def socket_drops(inode: int) -> int | None:
    """The kernel's drop counter of the UDP socket with this inode (None: not found)."""
    for path in ("/proc/self/net/udp", "/proc/self/net/udp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if len(parts) >= 13 and parts[9] == str(inode):
                        return int(parts[-1])
        except OSError:
            continue
    return None


def udp_snmp() -> dict[str, int]:
    """The namespace's Udp counters from /proc/net/snmp (InDatagrams, RcvbufErrors ...)."""
    try:
        with open("/proc/self/net/snmp") as f:
            lines = [ln.split() for ln in f if ln.startswith("Udp:")]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:])}
