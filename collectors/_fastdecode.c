/*
 * collectors._fastdecode: the C fast path of collectors/decode.py.
 *
 * collectors/decode.py (Decoder) is the specification. This module decodes only the common
 * case and DECLINES everything else, so that the reference decoder handles it; for every frame
 * it does not decline, the PacketRecord it builds equals (==) the reference decoder's.
 *
 * Covered (everything else is declined):
 *   link types  Ethernet (1) with at most 2 VLAN tags (0x8100, 0x88A8, 0x9100), raw IP (101,
 *               12, 14, 228, 229), BSD null (0) / loop (108), Linux cooked v1 (113) / v2 (276);
 *               no PPPoE.
 *   IP          IPv4 (any IHL >= 5) that is not a fragment, whose total length is non-zero, at
 *               least its header and fully captured; IPv6 without extension headers, payload
 *               length non-zero, fully captured.
 *   tunnel      exactly one level of VXLAN (outer UDP destination port 4789, I flag set): the
 *               inner Ethernet frame (VLAN tags as above) and its IPv4/IPv6 as above. GENEVE
 *               (6081) and nested tunnels (an inner UDP to 4789 or 6081) are declined.
 *   transport   TCP with a complete header (data offset >= 5, all of it inside the packet),
 *               UDP (8 bytes), ICMP/ICMPv6 (8 bytes), SCTP (12 bytes). Other protocols are
 *               declined.
 *
 * Every read is preceded by a bounds check against the end of the buffer (or of the enclosing
 * IP packet, which is never past the end of the buffer).
 *
 * NOTE: Decoder.vxlan_ports / geneve_ports are fixed to 4789 / 6081 here; a Decoder configured
 * with other ports must not use this module.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#define MAX_RECORD (1 << 18)
#define BITMAP_LEN 8192
#define MAX_VLAN_TAGS_FAST 2

#define ETH_IPV4 0x0800
#define ETH_IPV6 0x86DD

#define PROTO_ICMP 1
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_ICMP6 58
#define PROTO_SCTP 132

#define VXLAN_PORT 4789
#define GENEVE_PORT 6081

/* Direct-mapped caches of address bytes objects: a capture has few distinct addresses, and
 * reusing the (immutable) bytes objects saves an allocation per address per record. */
#define ACACHE_BITS 9
#define ACACHE_SIZE (1 << ACACHE_BITS)

static PyObject *s_egress;   /* interned "egress" */
static PyObject *s_ingress;  /* interned "ingress" */
static PyObject *s_empty;    /* b"" */

/* Lazily filled int objects for 0..65535: ports and IP lengths repeat a lot, and a shared
 * (immutable) int saves an allocation and a deallocation per field per record. */
static PyObject *int_cache[65536];

/* A new reference to int(v), v < 65536. */
static inline PyObject *
small_int(unsigned v)
{
    PyObject *o = int_cache[v & 0xFFFF];
    if (o == NULL) {
        o = PyLong_FromUnsignedLong(v);
        if (o == NULL)
            return NULL;
        int_cache[v & 0xFFFF] = o;  /* the cache keeps this reference for good */
    }
    Py_INCREF(o);
    return o;
}

/* ------------------------------------------------------------------------------------------ */
/* Config                                                                                      */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *record_type;
    long long payload_max;       /* clamped to the long long range */
    int big_endian;
    unsigned long long ts_scale;
    int linktype;
    uint8_t bitmap[BITMAP_LEN];
    PyObject *cache4[ACACHE_SIZE];
    PyObject *cache16[ACACHE_SIZE];
    PyObject *vni_obj;           /* the last VNI's int, reused */
    uint32_t vni;
    long long declined;          /* frames decode_pcap has handed back so far */
} ConfigObject;

static PyTypeObject Config_Type;

static void
config_clear_caches(ConfigObject *self)
{
    for (int i = 0; i < ACACHE_SIZE; i++) {
        Py_CLEAR(self->cache4[i]);
        Py_CLEAR(self->cache16[i]);
    }
    Py_CLEAR(self->vni_obj);
}

static int
Config_traverse(ConfigObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->record_type);
    return 0;
}

static int
Config_clear(ConfigObject *self)
{
    Py_CLEAR(self->record_type);
    config_clear_caches(self);
    return 0;
}

static void
Config_dealloc(ConfigObject *self)
{
    PyObject_GC_UnTrack(self);
    Config_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Config_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"record_type", "payload_max", "port_bitmap", "big_endian",
                             "ts_scale", "linktype", NULL};
    PyObject *record_type, *payload_max_o, *ts_scale_o;
    Py_buffer bitmap;
    int big_endian, linktype;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOy*pOi:Config", kwlist, &record_type,
                                     &payload_max_o, &bitmap, &big_endian, &ts_scale_o,
                                     &linktype))
        return NULL;
    if (bitmap.len != BITMAP_LEN) {
        PyErr_Format(PyExc_ValueError, "port_bitmap must be %d bytes, not %zd", BITMAP_LEN,
                     bitmap.len);
        PyBuffer_Release(&bitmap);
        return NULL;
    }
    if (!PyCallable_Check(record_type)) {
        PyErr_SetString(PyExc_TypeError, "record_type must be callable");
        PyBuffer_Release(&bitmap);
        return NULL;
    }
    if (!PyLong_Check(payload_max_o) || !PyLong_Check(ts_scale_o)) {
        PyErr_SetString(PyExc_TypeError, "payload_max and ts_scale must be int");
        PyBuffer_Release(&bitmap);
        return NULL;
    }
    int overflow = 0;
    long long payload_max = PyLong_AsLongLongAndOverflow(payload_max_o, &overflow);
    if (payload_max == -1 && PyErr_Occurred()) {
        PyBuffer_Release(&bitmap);
        return NULL;
    }
    if (overflow > 0)
        payload_max = LLONG_MAX;
    else if (overflow < 0)
        payload_max = -1; /* any negative value: see keep_payload() */
    long long ts_scale = PyLong_AsLongLongAndOverflow(ts_scale_o, &overflow);
    if (ts_scale == -1 && PyErr_Occurred()) {
        PyBuffer_Release(&bitmap);
        return NULL;
    }
    /* Bounded so that sec * 1e9 + frac * ts_scale fits in 64 unsigned bits. */
    if (overflow || ts_scale < 0 || ts_scale > 1000000000LL) {
        PyErr_SetString(PyExc_ValueError, "ts_scale must be in 0..1_000_000_000");
        PyBuffer_Release(&bitmap);
        return NULL;
    }

    ConfigObject *self = (ConfigObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        PyBuffer_Release(&bitmap);
        return NULL;
    }
    Py_INCREF(record_type);
    self->record_type = record_type;
    self->payload_max = payload_max;
    self->big_endian = big_endian;
    self->ts_scale = (unsigned long long)ts_scale;
    self->linktype = linktype;
    memcpy(self->bitmap, bitmap.buf, BITMAP_LEN);
    PyBuffer_Release(&bitmap);
    return (PyObject *)self;
}

static PyMemberDef Config_members[] = {
    {"record_type", T_OBJECT, offsetof(ConfigObject, record_type), READONLY, NULL},
    {"payload_max", T_LONGLONG, offsetof(ConfigObject, payload_max), READONLY, NULL},
    {"big_endian", T_BOOL, offsetof(ConfigObject, big_endian), READONLY, NULL},
    {"ts_scale", T_ULONGLONG, offsetof(ConfigObject, ts_scale), READONLY, NULL},
    {"linktype", T_INT, offsetof(ConfigObject, linktype), READONLY, NULL},
    {"declined", T_LONGLONG, offsetof(ConfigObject, declined), READONLY,
     "frames decode_pcap has declined (returned as (ts_ns, frame)) so far"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject Config_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "collectors._fastdecode.Config",
    .tp_doc = PyDoc_STR("Config(record_type, payload_max, port_bitmap, big_endian, ts_scale, "
                        "linktype): what the fast path needs to know about a capture and the "
                        "payload policy."),
    .tp_basicsize = sizeof(ConfigObject),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Config_new,
    .tp_traverse = (traverseproc)Config_traverse,
    .tp_clear = (inquiry)Config_clear,
    .tp_dealloc = (destructor)Config_dealloc,
    .tp_members = Config_members,
};

/* ------------------------------------------------------------------------------------------ */
/* Parsing (pure C, no Python objects): fills a Pkt or declines                                */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    const uint8_t *src, *dst;  /* innermost IP addresses */
    int alen;                  /* 4 or 16 */
    int ip_version;
    int proto;
    unsigned sport, dport, flags, window;
    uint32_t seq, ack;
    Py_ssize_t tot;            /* wire_len == cap_len (never truncated here) */
    Py_ssize_t payload_len;
    Py_ssize_t data_off;       /* offset of the transport payload */
    int encap;                 /* 1: inside VXLAN */
    uint32_t vni;
    const uint8_t *msrc;       /* outer source address when encapsulated by a frame */
    int msrc_len;
} Pkt;

static inline unsigned
be16(const uint8_t *p)
{
    return ((unsigned)p[0] << 8) | p[1];
}

static inline uint32_t
be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint32_t
le32(const uint8_t *p)
{
    return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}

static int parse_ethernet(const uint8_t *b, Py_ssize_t off, Py_ssize_t end, int depth, Pkt *p);

/* The VXLAN header at b[off:end] and the inner Ethernet frame after it. */
static int
parse_vxlan(const uint8_t *b, Py_ssize_t off, Py_ssize_t end, Pkt *p)
{
    if (end - off < 8 || !(b[off] & 0x08))
        return 0;
    p->encap = 1;
    p->vni = be32(b + off + 4) >> 8;
    return parse_ethernet(b, off + 8, end, 1, p);
}

/* The IP packet at b[off:end] with ethertype et; depth 0 = outer, 1 = inside VXLAN. */
static int
parse_ip(const uint8_t *b, Py_ssize_t off, Py_ssize_t end, unsigned et, int depth, Pkt *p)
{
    Py_ssize_t avail = end - off;
    Py_ssize_t tot, l4;
    int proto;

    if (et == ETH_IPV4) {
        if (avail < 20)
            return 0;
        unsigned vihl = b[off];
        Py_ssize_t ihl = (Py_ssize_t)(vihl & 0x0F) * 4;
        if ((vihl >> 4) != 4 || ihl < 20 || avail < ihl)
            return 0;
        tot = be16(b + off + 2);
        if (tot == 0 || tot < ihl || tot > avail)  /* offload length, bad, truncated */
            return 0;
        if (be16(b + off + 6) & 0x3FFF)  /* MF or a fragment offset */
            return 0;
        proto = b[off + 9];
        p->src = b + off + 12;
        p->dst = b + off + 16;
        p->alen = 4;
        p->ip_version = 4;
        l4 = off + ihl;
    }
    else if (et == ETH_IPV6) {
        if (avail < 40 || (b[off] >> 4) != 6)
            return 0;
        Py_ssize_t plen = be16(b + off + 4);
        if (plen == 0)  /* jumbogram or offload */
            return 0;
        tot = plen + 40;
        if (tot > avail)
            return 0;
        /* Any extension header (hop-by-hop 0, routing, fragment, AH ...) is not one of the
         * transports below and so declines. */
        proto = b[off + 6];
        p->src = b + off + 8;
        p->dst = b + off + 24;
        p->alen = 16;
        p->ip_version = 6;
        l4 = off + 40;
    }
    else {
        return 0;
    }

    /* Not truncated: the transport bytes are all there, and its length on the wire is this. */
    Py_ssize_t l4len = off + tot - l4;
    const uint8_t *t = b + l4;
    p->proto = proto;
    p->tot = tot;
    switch (proto) {
    case PROTO_TCP: {
        if (l4len < 20)
            return 0;
        Py_ssize_t hlen = (Py_ssize_t)(t[12] >> 4) * 4;
        if (hlen < 20 || l4len < hlen)
            return 0;
        p->sport = be16(t);
        p->dport = be16(t + 2);
        p->seq = be32(t + 4);
        p->ack = be32(t + 8);
        p->flags = t[13];
        p->window = be16(t + 14);
        p->payload_len = l4len - hlen;
        p->data_off = l4 + hlen;
        return 1;
    }
    case PROTO_UDP: {
        if (l4len < 8)
            return 0;
        unsigned dport = be16(t + 2);
        if (dport == VXLAN_PORT || dport == GENEVE_PORT) {
            if (depth > 0 || dport == GENEVE_PORT)
                return 0;
            p->msrc = p->src;
            p->msrc_len = p->alen;
            return parse_vxlan(b, l4 + 8, off + tot, p);
        }
        p->sport = be16(t);
        p->dport = dport;
        p->seq = p->ack = 0;
        p->flags = p->window = 0;
        p->payload_len = l4len - 8;
        p->data_off = l4 + 8;
        return 1;
    }
    case PROTO_SCTP:
        if (l4len < 12)
            return 0;
        p->sport = be16(t);
        p->dport = be16(t + 2);
        p->seq = p->ack = 0;
        p->flags = p->window = 0;
        p->payload_len = l4len - 12;
        p->data_off = l4 + 12;
        return 1;
    case PROTO_ICMP:
    case PROTO_ICMP6:
        if (l4len < 8)
            return 0;
        p->sport = t[0];
        p->dport = t[1];
        p->seq = p->ack = 0;
        p->flags = p->window = 0;
        p->payload_len = l4len - 8;
        p->data_off = l4 + 8;
        return 1;
    default:
        return 0;
    }
}

static int
parse_ethernet(const uint8_t *b, Py_ssize_t off, Py_ssize_t end, int depth, Pkt *p)
{
    if (end - off < 14)
        return 0;
    unsigned et = be16(b + off + 12);
    off += 14;
    int tags = 0;
    while (et == 0x8100 || et == 0x88A8 || et == 0x9100) {
        if (++tags > MAX_VLAN_TAGS_FAST || end - off < 4)
            return 0;
        et = be16(b + off + 2);
        off += 4;
    }
    return parse_ip(b, off, end, et, depth, p);
}

/* One captured frame of the given link type. */
static int
parse_frame(const uint8_t *b, Py_ssize_t n, int linktype, Pkt *p)
{
    p->encap = 0;
    switch (linktype) {
    case 1:
        return parse_ethernet(b, 0, n, 0, p);
    case 101:
    case 12:
    case 14: {
        if (n < 1)
            return 0;
        unsigned ver = b[0] >> 4;
        return parse_ip(b, 0, n, ver == 4 ? ETH_IPV4 : ver == 6 ? ETH_IPV6 : 0, 0, p);
    }
    case 228:
        return parse_ip(b, 0, n, ETH_IPV4, 0, p);
    case 229:
        return parse_ip(b, 0, n, ETH_IPV6, 0, p);
    case 0:
    case 108: {
        if (n < 4)
            return 0;
        uint32_t fam = be32(b);
        if (linktype == 0 && fam > 0xFFFF)
            fam = le32(b);
        unsigned et = fam == 2 ? ETH_IPV4
                      : (fam == 10 || fam == 24 || fam == 28 || fam == 30) ? ETH_IPV6 : 0;
        return parse_ip(b, 4, n, et, 0, p);
    }
    case 113:
        if (n < 16)
            return 0;
        return parse_ip(b, 16, n, be16(b + 14), 0, p);
    case 276:
        if (n < 20)
            return 0;
        return parse_ip(b, 20, n, be16(b), 0, p);
    default:
        return 0;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Building the record                                                                         */
/* ------------------------------------------------------------------------------------------ */

static inline uint32_t
hash_addr(const uint8_t *a, int len)
{
    uint32_t h;
    if (len == 4) {
        h = be32(a);
    }
    else {
        uint32_t w0, w1, w2, w3;
        memcpy(&w0, a, 4);
        memcpy(&w1, a + 4, 4);
        memcpy(&w2, a + 8, 4);
        memcpy(&w3, a + 12, 4);
        h = w0 ^ (w1 * 0x85EBCA6Bu) ^ (w2 * 0xC2B2AE35u) ^ (w3 * 0x27D4EB2Fu);
    }
    h *= 0x9E3779B1u;
    return h >> (32 - ACACHE_BITS);
}

static inline int
addr_eq(const uint8_t *x, const uint8_t *y, int len)
{
    if (len == 4) {
        uint32_t a, b;
        memcpy(&a, x, 4);
        memcpy(&b, y, 4);
        return a == b;
    }
    uint64_t a0, a1, b0, b1;
    memcpy(&a0, x, 8);
    memcpy(&a1, x + 8, 8);
    memcpy(&b0, y, 8);
    memcpy(&b1, y + 8, 8);
    return ((a0 ^ b0) | (a1 ^ b1)) == 0;
}

/* A new reference to a bytes object equal to a[:len] (len 4 or 16), from the cache. */
static PyObject *
addr_bytes(ConfigObject *cfg, const uint8_t *a, int len)
{
    PyObject **slot = (len == 4 ? cfg->cache4 : cfg->cache16) + hash_addr(a, len);
    PyObject *o = *slot;
    if (o != NULL && addr_eq((const uint8_t *)PyBytes_AS_STRING(o), a, len)) {
        Py_INCREF(o);
        return o;
    }
    o = PyBytes_FromStringAndSize((const char *)a, len);
    if (o == NULL)
        return NULL;
    Py_XSETREF(*slot, o);
    Py_INCREF(o);
    return o;
}

static inline int
bit_set(const ConfigObject *cfg, unsigned port)
{
    return (cfg->bitmap[port >> 3] >> (port & 7)) & 1;
}

/*
 * Build the PacketRecord. mirror_obj, when given, is the mirror source (decode_vxlan's
 * outer_src); otherwise p->msrc is used when the frame was encapsulated.
 * Returns a new reference, Py_None (borrowed, not increfed: "declined") or NULL on error.
 */
static PyObject *
build_record(ConfigObject *cfg, const Pkt *p, const uint8_t *b, PyObject *ts, PyObject *mirror_obj)
{
    PyObject *args[20];
    PyObject *payload;
    PyObject *rec = NULL;
    int keep = 0;

    if (p->payload_len > 0 && cfg->payload_max != 0 &&
        (bit_set(cfg, p->sport) || bit_set(cfg, p->dport))) {
        if (cfg->payload_max < 0)
            return Py_None; /* the reference slices with a negative bound: leave it to it */
        keep = 1;
    }

    for (int i = 0; i < 20; i++)
        args[i] = NULL;

    if (keep) {
        Py_ssize_t n = p->payload_len;
        if ((long long)n > cfg->payload_max)
            n = (Py_ssize_t)cfg->payload_max;
        payload = PyBytes_FromStringAndSize((const char *)b + p->data_off, n);
        if (payload == NULL)
            return NULL;
    }
    else {
        payload = Py_NewRef(s_empty);
    }
    args[15] = payload;

    PyObject *direction = Py_None;
    if (p->encap) {
        if (cfg->vni_obj == NULL || cfg->vni != p->vni) {
            PyObject *v = PyLong_FromUnsignedLong(p->vni);
            if (v == NULL)
                goto done;
            Py_XSETREF(cfg->vni_obj, v);
            cfg->vni = p->vni;
        }
        args[1] = Py_NewRef(cfg->vni_obj);
        if (mirror_obj != NULL) {
            args[2] = Py_NewRef(mirror_obj);
            const char *m = PyBytes_AS_STRING(mirror_obj);
            Py_ssize_t mlen = PyBytes_GET_SIZE(mirror_obj);
            if (mlen == p->alen && memcmp(m, p->src, (size_t)mlen) == 0)
                direction = s_egress;
            else if (mlen == p->alen && memcmp(m, p->dst, (size_t)mlen) == 0)
                direction = s_ingress;
        }
        else {
            args[2] = addr_bytes(cfg, p->msrc, p->msrc_len);
            if (p->msrc_len == p->alen && addr_eq(p->msrc, p->src, p->alen))
                direction = s_egress;
            else if (p->msrc_len == p->alen && addr_eq(p->msrc, p->dst, p->alen))
                direction = s_ingress;
        }
    }
    else {
        args[1] = Py_NewRef(Py_None);
        args[2] = Py_NewRef(Py_None);
    }
    args[0] = Py_NewRef(ts);
    /* All of these are < 65536: ports and bytes, IP lengths from a 16-bit field (+ 40). */
    args[3] = small_int((unsigned)p->ip_version);
    args[4] = addr_bytes(cfg, p->src, p->alen);
    args[5] = addr_bytes(cfg, p->dst, p->alen);
    args[6] = small_int((unsigned)p->proto);
    args[7] = small_int(p->sport);
    args[8] = small_int(p->dport);
    args[9] = small_int(p->flags);
    args[10] = p->seq ? PyLong_FromUnsignedLong(p->seq) : small_int(0);
    args[11] = p->ack ? PyLong_FromUnsignedLong(p->ack) : small_int(0);
    args[12] = p->tot < 65536 ? small_int((unsigned)p->tot) : PyLong_FromSsize_t(p->tot);
    args[13] = Py_XNewRef(args[12]);  /* cap_len == wire_len: never truncated here */
    args[14] = small_int((unsigned)p->payload_len);  /* <= 65535 - 8: after the headers */
    args[16] = Py_NewRef(Py_False);
    args[17] = Py_NewRef(Py_False);
    args[18] = Py_NewRef(direction);
    args[19] = small_int(p->window);  /* a 16-bit field */

    for (int i = 0; i < 20; i++) {
        if (args[i] == NULL)
            goto done;
    }
    rec = PyObject_Vectorcall(cfg->record_type, args, 20, NULL);
    if (rec == Py_None) {  /* None means "declined" to the callers */
        Py_DECREF(rec);
        rec = NULL;
        PyErr_SetString(PyExc_TypeError, "record_type returned None");
    }
done:
    for (int i = 0; i < 20; i++)
        Py_XDECREF(args[i]);
    if (rec == NULL && !PyErr_Occurred())
        PyErr_NoMemory();
    return rec;
}

/* ------------------------------------------------------------------------------------------ */
/* Module functions                                                                            */
/* ------------------------------------------------------------------------------------------ */

static int
check_cfg(PyObject *o)
{
    if (!PyObject_TypeCheck(o, &Config_Type)) {
        PyErr_SetString(PyExc_TypeError, "first argument must be a _fastdecode.Config");
        return 0;
    }
    return 1;
}

static int
get_buffer(PyObject *o, Py_buffer *view, const char *what)
{
    if (PyObject_GetBuffer(o, view, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a bytes-like object, not %.100s", what,
                     Py_TYPE(o)->tp_name);
        return 0;
    }
    return 1;
}

static PyObject *
fd_decode_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "decode_frame(cfg, frame, ts_ns) takes 3 arguments");
        return NULL;
    }
    if (!check_cfg(args[0]))
        return NULL;
    ConfigObject *cfg = (ConfigObject *)args[0];
    Py_buffer view;
    if (!get_buffer(args[1], &view, "frame"))
        return NULL;
    Pkt p;
    PyObject *rec = Py_None;
    if (parse_frame((const uint8_t *)view.buf, view.len, cfg->linktype, &p))
        rec = build_record(cfg, &p, (const uint8_t *)view.buf, args[2], NULL);
    PyBuffer_Release(&view);
    if (rec == Py_None)
        Py_RETURN_NONE;
    return rec;
}

static PyObject *
fd_decode_vxlan(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "decode_vxlan(cfg, data, outer_src, ts_ns) takes 4 arguments");
        return NULL;
    }
    if (!check_cfg(args[0]))
        return NULL;
    /* The record keeps outer_src itself, as the reference does: only exact bytes here. */
    if (!PyBytes_CheckExact(args[2]))
        Py_RETURN_NONE;
    ConfigObject *cfg = (ConfigObject *)args[0];
    Py_buffer view;
    if (!get_buffer(args[1], &view, "data"))
        return NULL;
    Pkt p;
    PyObject *rec = Py_None;
    const uint8_t *b = (const uint8_t *)view.buf;
    p.encap = 0;
    if (parse_vxlan(b, 0, view.len, &p))
        rec = build_record(cfg, &p, b, args[3], args[2]);
    PyBuffer_Release(&view);
    if (rec == Py_None)
        Py_RETURN_NONE;
    return rec;
}

static PyObject *
fd_decode_pcap(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "decode_pcap(cfg, buf) takes 2 arguments");
        return NULL;
    }
    if (!check_cfg(args[0]))
        return NULL;
    ConfigObject *cfg = (ConfigObject *)args[0];
    Py_buffer view;
    if (!get_buffer(args[1], &view, "buf"))
        return NULL;
    const uint8_t *buf = (const uint8_t *)view.buf;
    const Py_ssize_t n = view.len;
    const int big = cfg->big_endian;
    const unsigned long long scale = cfg->ts_scale;
    const int lt = cfg->linktype;

    PyObject *items = PyList_New(0);
    if (items == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_ssize_t pos = 0;
    long long nframes = 0, nbytes = 0;
    int corrupt = 0;

    while (n - pos >= 16) {
        const uint8_t *h = buf + pos;
        uint32_t sec = big ? be32(h) : le32(h);
        uint32_t frac = big ? be32(h + 4) : le32(h + 4);
        uint32_t caplen = big ? be32(h + 8) : le32(h + 8);
        if (caplen > MAX_RECORD) {
            corrupt = 1;
            break;
        }
        if ((Py_ssize_t)caplen > n - pos - 16)
            break;
        const uint8_t *frame = h + 16;
        unsigned long long ts_v = (unsigned long long)sec * 1000000000ULL +
                                  (unsigned long long)frac * scale;
        PyObject *ts = PyLong_FromUnsignedLongLong(ts_v);
        if (ts == NULL)
            goto error;
        Pkt p;
        PyObject *item = Py_None;
        if (parse_frame(frame, (Py_ssize_t)caplen, lt, &p)) {
            /* offsets in p are relative to the frame */
            item = build_record(cfg, &p, frame, ts, NULL);
            if (item == NULL) {
                Py_DECREF(ts);
                goto error;
            }
        }
        if (item == Py_None) {
            PyObject *fb = PyBytes_FromStringAndSize((const char *)frame, (Py_ssize_t)caplen);
            if (fb == NULL) {
                Py_DECREF(ts);
                goto error;
            }
            item = PyTuple_New(2);
            if (item == NULL) {
                Py_DECREF(ts);
                Py_DECREF(fb);
                goto error;
            }
            PyTuple_SET_ITEM(item, 0, ts);  /* steals */
            PyTuple_SET_ITEM(item, 1, fb);
            cfg->declined++;
        }
        else {
            Py_DECREF(ts);
        }
        int rc = PyList_Append(items, item);
        Py_DECREF(item);
        if (rc < 0)
            goto error;
        nframes += 1;
        nbytes += caplen;
        pos += 16 + (Py_ssize_t)caplen;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(NnLL)", items, corrupt ? -pos - 1 : pos, nframes, nbytes);

error:
    PyBuffer_Release(&view);
    Py_DECREF(items);
    return NULL;
}

static PyMethodDef fd_methods[] = {
    {"decode_pcap", (PyCFunction)(void (*)(void))fd_decode_pcap, METH_FASTCALL,
     PyDoc_STR("decode_pcap(cfg, buf) -> (items, pos, nframes, nbytes)\n\n"
               "Walk the whole pcap records at the start of buf; each becomes a PacketRecord or, "
               "when declined, a (ts_ns, frame) tuple. pos is the first byte not consumed, or "
               "-(offset of a corrupt record header) - 1.")},
    {"decode_frame", (PyCFunction)(void (*)(void))fd_decode_frame, METH_FASTCALL,
     PyDoc_STR("decode_frame(cfg, frame, ts_ns) -> PacketRecord | None (declined)")},
    {"decode_vxlan", (PyCFunction)(void (*)(void))fd_decode_vxlan, METH_FASTCALL,
     PyDoc_STR("decode_vxlan(cfg, data, outer_src, ts_ns) -> PacketRecord | None (declined)")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fd_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "collectors._fastdecode",
    .m_doc = PyDoc_STR("C fast path of collectors.decode (the common case; declines the rest)."),
    .m_size = -1,
    .m_methods = fd_methods,
};

PyMODINIT_FUNC
PyInit__fastdecode(void)
{
    if (PyType_Ready(&Config_Type) < 0)
        return NULL;
    if (s_egress == NULL) {
        s_egress = PyUnicode_InternFromString("egress");
        s_ingress = PyUnicode_InternFromString("ingress");
        s_empty = PyBytes_FromStringAndSize(NULL, 0);
        if (s_egress == NULL || s_ingress == NULL || s_empty == NULL)
            return NULL;
    }
    PyObject *m = PyModule_Create(&fd_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&Config_Type);
    if (PyModule_AddObject(m, "Config", (PyObject *)&Config_Type) < 0) {
        Py_DECREF(&Config_Type);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
