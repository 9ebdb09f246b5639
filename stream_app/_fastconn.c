/*
 * stream_app._fastconn: the C fast path of one HTTP connection (stream_app.core.l7's
 * HttpAnalyzer with the framer of stream_app.core.http), for the common case only.
 *
 * The Python classes are the specification. A FastHttp takes a connection whose handshake
 * was seen and follows it while every segment arrives in order and whole and every message
 * is plain: a head without odd tags, requests without a chunked body, responses framed by
 * Content-Length (or with no body: HEAD, 204, 304). The first time anything else comes (a
 * segment out of order or cut by the capture, a reordered copy that must wait, a chunked or
 * unframed body, an interim or tunnel response, a malformed or folded head, a pipeline past
 * max_pending, a head cut by the end), it "bails": before changing anything that the Python
 * analyzer would not have, it hands its state to the context's ``bail`` callable, which
 * builds the equal HttpAnalyzer from it (HttpAnalyzerState, the state codec's own form) and
 * goes on from there. So a FastHttp never decides anything differently from the Python
 * analyzer; it only decides the common things without the interpreter.
 * tests/test_fastconn_equivalence.py holds the two equal on every capture the tests use.
 *
 * It also makes the HttpTransaction records of its finished exchanges itself (take, finish),
 * which is most of what a transaction costs in Python.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

#include "_fasthttp_api.h"

#define MASK 0xFFFFFFFFLL
#define HALF 0x80000000LL
#define MAX_HEADER_BYTES (64 * 1024)
#define FIN 0x01
#define SYN 0x02
#define ACK 0x10
#define NONE_SEQ (-1)

/* Framer states (stream_app/core/http.py) */
enum { START = 0, HEAD = 1, BODY = 2, TUNNEL = 8 };

/* Txn text fields, in TxnState's order after ts, depth and tags */
enum {
    F_METHOD, F_URI, F_VERSION, F_HOST, F_UA, F_REFERRER, F_REQ_CTYPE, F_REASON,
    F_RESP_VERSION, F_RESP_CTYPE, F_AUTH, F_PROXY_AUTH, F_COOKIE, F_SET_COOKIE, NF
};

static const char *field_names[NF] = {
    "method", "uri", "version", "host", "user_agent", "referrer", "req_ctype", "reason",
    "resp_version", "resp_ctype", "auth", "proxy_auth", "cookie", "set_cookie",
};
static PyObject *s_field[NF];  /* interned */
static PyObject *s_pipelined, *s_reordered, *s_truncated, *s_no_response, *s_at;
static PyObject *s_HEAD, *NS_obj;

/* set by setup() and the module's import */
static PyObject *record_type, *redact_auth, *redact_cookie;
static fh_api *fh;
static Py_ssize_t off_ts, off_flags, off_seq, off_ack, off_plen, off_payload;

typedef struct {
    int64_t ts, depth;
    PyObject *tags;          /* list, or NULL: none yet */
    PyObject *f[NF];         /* NULL: None */
    int status;              /* -1: None */
    int64_t resp_ts;
    int has_resp_ts;
    int64_t req_body, resp_body;
    int req_done;
} Txn;

typedef struct {
    int state;
    PyObject *buf;           /* bytes of a head not yet complete (HEAD), or NULL */
    int64_t remaining;
    Txn *txn;
    int64_t msg_ts;
    Py_ssize_t scan;
} Stream;

/* -- the shared context: one per L7 engine --------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *ready;         /* the engine's list of analyzers with finished exchanges */
    PyObject *bail;          /* bail(fast, record, is_orig, rest) */
    PyObject *state;         /* state(parts) -> HttpAnalyzerState */
    PyObject *redactor;      /* stream_app.core.redact.Redactor */
    PyObject *clean;         /* its set of URIs known to need no redaction */
    int keep_credentials;
    Py_ssize_t max_pending;
    PyObject *last[NF];      /* the last ASCII text made per field: most repeat (see text) */
} CtxObject;

static void
ctx_dealloc(CtxObject *self)
{
    PyObject_GC_UnTrack(self);
    for (int i = 0; i < NF; i++)
        Py_CLEAR(self->last[i]);
    Py_CLEAR(self->ready);
    Py_CLEAR(self->bail);
    Py_CLEAR(self->state);
    Py_CLEAR(self->redactor);
    Py_CLEAR(self->clean);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
ctx_traverse(CtxObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->ready);
    Py_VISIT(self->bail);
    Py_VISIT(self->state);
    Py_VISIT(self->redactor);
    Py_VISIT(self->clean);
    return 0;
}

static int
ctx_clear(CtxObject *self)
{
    Py_CLEAR(self->ready);
    Py_CLEAR(self->bail);
    Py_CLEAR(self->state);
    Py_CLEAR(self->redactor);
    Py_CLEAR(self->clean);
    return 0;
}

static PyObject *
ctx_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"ready", "bail", "state", "redactor", "keep_credentials",
                         "max_pending", NULL};
    PyObject *ready, *bail, *state, *redactor;
    int keep;
    Py_ssize_t max_pending;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OOOpn", kw, &PyList_Type, &ready, &bail,
                                     &state, &redactor, &keep, &max_pending))
        return NULL;
    PyObject *clean = PyObject_GetAttrString(redactor, "_clean");
    if (clean == NULL)
        return NULL;
    if (!PySet_Check(clean)) {
        Py_DECREF(clean);
        PyErr_SetString(PyExc_TypeError, "redactor._clean must be a set");
        return NULL;
    }
    CtxObject *self = (CtxObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(clean);
        return NULL;
    }
    self->ready = Py_NewRef(ready);
    self->bail = Py_NewRef(bail);
    self->state = Py_NewRef(state);
    self->redactor = Py_NewRef(redactor);
    self->clean = clean;
    self->keep_credentials = keep;
    self->max_pending = max_pending;
    return (PyObject *)self;
}

static PyTypeObject CtxType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stream_app._fastconn.Context",
    .tp_basicsize = sizeof(CtxObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("Context(ready, bail, state, redactor, keep_credentials, max_pending): "
                        "what every FastHttp of one L7 engine shares"),
    .tp_new = ctx_new,
    .tp_dealloc = (destructor)ctx_dealloc,
    .tp_traverse = (traverseproc)ctx_traverse,
    .tp_clear = (inquiry)ctx_clear,
};

/* -- the connection ---------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    CtxObject *ctx;
    PyObject *flow;
    int64_t next[2];         /* per direction (0 originator, 1 responder): NONE_SEQ = None */
    int midstream[2];
    int64_t fin[2];          /* where each direction's FIN put its end; NONE_SEQ = None */
    Stream st[2];            /* 0: requests, 1: responses */
    Txn **pend;              /* requests awaiting a response, oldest first */
    Py_ssize_t npend, cpend;
    Txn **done;              /* finished exchanges not yet made records */
    Py_ssize_t ndone, cdone;
    int64_t depth;
    int64_t cap;
    Py_ssize_t segments;     /* segments seen (the engine's stats.segments, added by it) */
    int queued;              /* in ctx->ready */
    int released;            /* its state went to a Python analyzer: inert */
    PyObject *texts;         /* (http id prefix, community id, vni, src, sport, dst, dport,
                                direction) of the flow, at the first record */
} FastObject;

static PyTypeObject FastType;

static void
txn_free(Txn *t)
{
    if (t == NULL)
        return;
    Py_XDECREF(t->tags);
    for (int i = 0; i < NF; i++)
        Py_XDECREF(t->f[i]);
    PyMem_Free(t);
}

/* A new tags list. Untracked by the GC: it only ever holds strs, so it can be in no cycle,
 * and one per record was most of what the collector had to walk. */
static PyObject *
new_tags(void)
{
    PyObject *l = PyList_New(0);
    if (l != NULL)
        PyObject_GC_UnTrack(l);
    return l;
}

static int
txn_tag(Txn *t, PyObject *tag)
{
    if (t->tags == NULL) {
        t->tags = new_tags();
        if (t->tags == NULL)
            return -1;
    }
    int has = PySequence_Contains(t->tags, tag);
    if (has < 0)
        return -1;
    return has ? 0 : PyList_Append(t->tags, tag);
}

static int
push(Txn ***arr, Py_ssize_t *n, Py_ssize_t *cap, Txn *t)
{
    if (*n == *cap) {
        Py_ssize_t nc = *cap ? *cap * 2 : 4;
        Txn **na = PyMem_Realloc(*arr, nc * sizeof(Txn *));
        if (na == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        *arr = na;
        *cap = nc;
    }
    (*arr)[(*n)++] = t;
    return 0;
}

static inline int64_t
dist(int64_t a, int64_t b)
{
    return ((a - b + HALF) & MASK) - HALF;
}

static inline PyObject *
slot(PyObject *r, Py_ssize_t off)
{
    return *(PyObject **)((char *)r + off);
}

static int
get_i64(PyObject *r, Py_ssize_t off, int64_t *out)
{
    PyObject *v = slot(r, off);
    if (v == NULL || !PyLong_Check(v)) {
        PyErr_SetString(PyExc_TypeError, "packet record field is not an int");
        return -1;
    }
    /* (PyLong_AsLongLong goes through _PyLong_AsByteArray for any int of two digits or more,
     * as every timestamp and most sequence numbers are) */
    int overflow;
    *out = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow) {
        PyErr_SetString(PyExc_OverflowError, "packet record field out of range");
        return -1;
    }
    if (*out == -1 && PyErr_Occurred())
        return -1;
    return 0;
}

static PyObject *
fast_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *ctx, *flow, *isn_o, *isn_r;
    long long cap;
    if (!PyArg_ParseTuple(args, "O!OOOL", &CtxType, &ctx, &flow, &isn_o, &isn_r, &cap))
        return NULL;
    FastObject *self = PyObject_GC_New(FastObject, type);
    if (self == NULL)
        return NULL;
    memset((char *)self + sizeof(PyObject), 0, sizeof(FastObject) - sizeof(PyObject));
    self->ctx = (CtxObject *)Py_NewRef(ctx);
    self->flow = Py_NewRef(flow);
    self->cap = cap;
    PyObject *isn[2] = {isn_o, isn_r};
    for (int d = 0; d < 2; d++) {
        self->fin[d] = NONE_SEQ;
        self->next[d] = NONE_SEQ;
        if (isn[d] != Py_None) {
            long long v = PyLong_AsLongLong(isn[d]);
            if (v == -1 && PyErr_Occurred()) {
                Py_DECREF(self);
                return NULL;
            }
            self->next[d] = (v + 1) & MASK;
        }
    }
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static void
fast_drop_txns(FastObject *self)
{
    /* Every Txn is in pend or done (a stream's current one is pending): free each once. */
    for (Py_ssize_t i = 0; i < self->npend; i++)
        txn_free(self->pend[i]);
    for (Py_ssize_t i = 0; i < self->ndone; i++)
        txn_free(self->done[i]);
    self->npend = self->ndone = 0;
    self->st[0].txn = self->st[1].txn = NULL;
}

static int
fast_clear(FastObject *self)
{
    Py_CLEAR(self->ctx);
    Py_CLEAR(self->flow);
    Py_CLEAR(self->texts);
    Py_CLEAR(self->st[0].buf);
    Py_CLEAR(self->st[1].buf);
    return 0;
}

static void
fast_dealloc(FastObject *self)
{
    PyObject_GC_UnTrack(self);
    fast_drop_txns(self);
    PyMem_Free(self->pend);
    PyMem_Free(self->done);
    fast_clear(self);
    PyObject_GC_Del(self);
}

static int
fast_traverse(FastObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->ctx);
    Py_VISIT(self->flow);
    Py_VISIT(self->texts);
    return 0;
}

/* -- the framer (MessageStream and HttpConversation, their common case) ----------------------- */

/* What a step of the framer says: go on, bail at this point, or an exception was set. */
enum { OK = 0, BAIL = 1, ERR = -1 };

static int
end_message(FastObject *self, int is_req)
{
    Stream *s = &self->st[is_req ? 0 : 1];
    Txn *t = s->txn;
    s->txn = NULL;
    s->state = START;
    if (t == NULL)
        return OK;
    if (is_req) {
        t->req_done = 1;  /* request_done: HTTP/0.9 never takes this path */
        return OK;
    }
    /* response_done: the response's exchange is the oldest pending one */
    for (Py_ssize_t i = 0; i < self->npend; i++) {
        if (self->pend[i] == t) {
            memmove(self->pend + i, self->pend + i + 1, (self->npend - i - 1) * sizeof(Txn *));
            self->npend--;
            break;
        }
    }
    return push(&self->done, &self->ndone, &self->cdone, t) < 0 ? ERR : OK;
}

static inline void
count_body(Stream *s, int is_req, int64_t n)
{
    if (s->txn != NULL) {
        if (is_req)
            s->txn->req_body += n;
        else
            s->txn->resp_body += n;
    }
}

/* redactor.uri(v) unless v is empty or known clean */
static PyObject *
redact_uri(CtxObject *ctx, PyObject *v)
{
    if (PyUnicode_GET_LENGTH(v) == 0)
        return Py_NewRef(v);
    int clean = PySet_Contains(ctx->clean, v);
    if (clean < 0)
        return NULL;
    if (clean)
        return Py_NewRef(v);
    return PyObject_CallMethod(ctx->redactor, "uri", "O", v);
}

/* A field's text: bytes.decode("utf-8", "backslashreplace"), as parse_head makes it. Method,
 * version, Host, User-Agent, content types and reasons repeat from message to message, so
 * the last ASCII text per field is kept and given again when the bytes are the same (an
 * ASCII str equal byte for byte is the decoding of those bytes). URIs, Referers and
 * credentials are never kept: they are redacted, and the context must hold no secret. */
static PyObject *
text(CtxObject *ctx, int k, fh_span v)
{
    int cache = !(k == F_URI || k == F_REFERRER || k >= F_AUTH);
    PyObject *last = cache ? ctx->last[k] : NULL;
    if (last != NULL && PyUnicode_GET_LENGTH(last) == v.n
        && memcmp(PyUnicode_1BYTE_DATA(last), v.s, (size_t)v.n) == 0)
        return Py_NewRef(last);
    PyObject *t = PyUnicode_DecodeUTF8(v.s, v.n, "backslashreplace");
    if (t != NULL && cache && PyUnicode_IS_ASCII(t))
        Py_XSETREF(ctx->last[k], Py_NewRef(t));
    return t;
}

static const int field_of[] = {
    [H_HOST] = F_HOST, [H_UA] = F_UA, [H_REFERER] = F_REFERRER, [H_AUTH] = F_AUTH,
    [H_PAUTH] = F_PROXY_AUTH, [H_COOKIE] = F_COOKIE, [H_SETCOOKIE] = F_SET_COOKIE,
};

/* One complete head: BAIL before any change when it is not plain. */
static int
start_message(FastObject *self, int is_req, const char *head, Py_ssize_t hlen, int64_t ts)
{
    Stream *s = &self->st[is_req ? 0 : 1];
    CtxObject *ctx = self->ctx;
    fh_plain h;
    if (!fh->scan_plain(head, hlen, is_req, &h))
        return BAIL;  /* tags, chunked, malformed, folded: the Python framer's */
    int64_t len = h.length;
    int64_t mts = s->msg_ts ? s->msg_ts : ts;
    Txn *t;
    if (is_req) {
        if (h.version.n == 3 && memcmp(h.version.s, "0.9", 3) == 0)
            return BAIL;  /* "HTTP/0.9" read as a version: answered to the close */
        if (self->npend + 1 > ctx->max_pending)
            return BAIL;  /* the oldest would be reported no_response */
        t = PyMem_Calloc(1, sizeof(Txn));
        if (t == NULL) {
            PyErr_NoMemory();
            return ERR;
        }
        t->status = -1;
        t->ts = mts;
        t->depth = ++self->depth;
        if ((self->npend && txn_tag(t, s_pipelined) < 0)
            || push(&self->pend, &self->npend, &self->cpend, t) < 0) {
            txn_free(t);
            return ERR;
        }
        if ((t->f[F_METHOD] = text(ctx, F_METHOD, h.method)) == NULL
            || (t->f[F_URI] = text(ctx, F_URI, h.uri)) == NULL
            || (t->f[F_VERSION] = text(ctx, F_VERSION, h.version)) == NULL)
            return ERR;
    }
    else {
        long status = h.status;
        if ((status >= 100 && status < 200 && status != 101) || self->npend == 0)
            return BAIL;  /* interim, or no request seen: the Python framer's */
        t = self->pend[0];
        PyObject *method = t->f[F_METHOD];
        int is_head = method != NULL && PyUnicode_Compare(method, s_HEAD) == 0;
        if (!(is_head || status == 204 || status == 304)) {
            if (status == 101 || len < 0)
                return BAIL;  /* upgrade, or a body read to the close */
            if (method != NULL && status >= 200 && status < 300
                && PyUnicode_CompareWithASCIIString(method, "CONNECT") == 0)
                return BAIL;  /* a tunnel */
        }
        PyObject *reason = h.reason.s ? text(ctx, F_REASON, h.reason) : NULL;
        if (h.reason.s && reason == NULL)
            return ERR;
        PyObject *rv = text(ctx, F_RESP_VERSION, h.resp_version);
        if (rv == NULL) {
            Py_XDECREF(reason);
            return ERR;
        }
        t->status = (int)status;
        Py_XSETREF(t->f[F_REASON], reason);
        Py_XSETREF(t->f[F_RESP_VERSION], rv);
        t->resp_ts = mts;
        t->has_resp_ts = 1;
    }
    s->txn = t;
    for (int i = 0; i < h.nfields; i++) {
        int kind = h.fields[i].kind;
        int k = kind == H_CTYPE ? (is_req ? F_REQ_CTYPE : F_RESP_CTYPE) : field_of[kind];
        PyObject *value = text(ctx, k, h.fields[i].value);
        if (value == NULL)
            return ERR;
        if (k == F_AUTH || k == F_PROXY_AUTH || k == F_COOKIE || k == F_SET_COOKIE) {
            if (!ctx->keep_credentials) {
                PyObject *fn = (k == F_AUTH || k == F_PROXY_AUTH) ? redact_auth : redact_cookie;
                Py_SETREF(value, PyObject_CallOneArg(fn, value));
                if (value == NULL)
                    return ERR;
            }
            if (k == F_SET_COOKIE && t->f[F_SET_COOKIE] != NULL) {
                Py_SETREF(value, PyUnicode_FromFormat("%U, %U", t->f[F_SET_COOKIE], value));
                if (value == NULL)
                    return ERR;
            }
        }
        Py_XSETREF(t->f[k], value);
    }
    if (is_req && !ctx->keep_credentials) {
        /* redact_request: URI, Referer, and a Host that carries userinfo */
        static const int uris[] = {F_URI, F_REFERRER};
        for (int i = 0; i < 2; i++) {
            int k = uris[i];
            if (t->f[k] != NULL) {
                PyObject *v = redact_uri(ctx, t->f[k]);
                if (v == NULL)
                    return ERR;
                Py_SETREF(t->f[k], v);
            }
        }
        if (t->f[F_HOST] != NULL) {
            int at = PyUnicode_Contains(t->f[F_HOST], s_at);
            if (at < 0)
                return ERR;
            if (at) {
                PyObject *v = PyObject_CallMethod(ctx->redactor, "authority", "O", t->f[F_HOST]);
                if (v == NULL)
                    return ERR;
                Py_SETREF(t->f[F_HOST], v);
            }
        }
    }
    /* How long is the body? (the unusual cases bailed above) */
    if (is_req) {
        if (len > 0) {
            s->state = BODY;
            s->remaining = len;
            return OK;
        }
        return end_message(self, 1);
    }
    if (t->status == 204 || t->status == 304 || len == 0
        || (t->f[F_METHOD] != NULL && PyUnicode_Compare(t->f[F_METHOD], s_HEAD) == 0))
        return end_message(self, 0);
    s->state = BODY;
    s->remaining = len;
    return OK;
}

/* The bytes of one direction, in order (MessageStream._feed for START, HEAD and BODY). On
 * BAIL, *rest is the part the Python framer is to be given (from a message's start), and
 * the stream is as the Python one would be there (HEAD, nothing buffered). */
static int
feed(FastObject *self, int is_req, PyObject *data, int64_t ts, PyObject **rest)
{
    Stream *s = &self->st[is_req ? 0 : 1];
    PyObject *buf;
    if (s->buf != NULL) {
        buf = PyBytes_FromStringAndSize(NULL, PyBytes_GET_SIZE(s->buf) + PyBytes_GET_SIZE(data));
        if (buf == NULL)
            return ERR;
        memcpy(PyBytes_AS_STRING(buf), PyBytes_AS_STRING(s->buf), PyBytes_GET_SIZE(s->buf));
        memcpy(PyBytes_AS_STRING(buf) + PyBytes_GET_SIZE(s->buf), PyBytes_AS_STRING(data),
               PyBytes_GET_SIZE(data));
        Py_CLEAR(s->buf);
    }
    else
        buf = Py_NewRef(data);
    Py_ssize_t scan = s->scan;
    s->scan = 0;
    const char *p = PyBytes_AS_STRING(buf);
    Py_ssize_t n = PyBytes_GET_SIZE(buf), pos = 0;
    int rc = OK;
    while (pos < n) {
        int st = s->state;
        if (st == BODY) {
            int64_t take = s->remaining < n - pos ? s->remaining : n - pos;
            s->remaining -= take;
            count_body(s, is_req, take);
            pos += take;
            if (s->remaining == 0 && (rc = end_message(self, is_req)) != OK)
                break;
        }
        else if (st == START) {
            if (p[pos] == '\r' || p[pos] == '\n') {
                while (pos < n && (p[pos] == '\r' || p[pos] == '\n'))
                    pos++;
                if (pos == n)
                    break;
            }
            s->msg_ts = ts;
            s->state = HEAD;
        }
        else if (st == HEAD) {
            /* The head's end: the first "\r\n\r\n" from frm on, unless a bare-LF blank line
             * "\n\n" comes before it (then the Python framer's). One pass over the line ends:
             * of the two, whichever starts first has the first LF. */
            Py_ssize_t frm = scan > pos ? scan : pos;
            scan = 0;
            Py_ssize_t end = -1;
            int bare_lf = 0;
            for (const char *q = memchr(p + frm, '\n', n - frm); q != NULL;
                 q = memchr(q + 1, '\n', p + n - q - 1)) {
                Py_ssize_t i = q - p;
                if (i + 1 < n && q[1] == '\n') {
                    bare_lf = 1;
                    break;
                }
                if (i - 1 >= frm && i + 2 < n && q[-1] == '\r' && q[1] == '\r' && q[2] == '\n') {
                    end = i - 1;
                    break;
                }
            }
            if (bare_lf)
                goto bail;  /* a bare-LF blank line: the Python framer's */
            if (end == -1) {
                if (n - pos > MAX_HEADER_BYTES)
                    goto bail;
                if (is_req && memchr(p + pos, '\n', n - pos) != NULL)
                    goto bail;  /* a complete line and no head's end: maybe HTTP/0.9 */
                s->buf = PyBytes_FromStringAndSize(p + pos, n - pos);
                if (s->buf == NULL) {
                    rc = ERR;
                    break;
                }
                s->scan = n - pos - 3 > 0 ? n - pos - 3 : 0;
                pos = n;
                break;
            }
            if (end - pos > MAX_HEADER_BYTES)
                goto bail;
            rc = start_message(self, is_req, p + pos, end - pos, ts);
            if (rc == BAIL)
                goto bail;
            if (rc != OK)
                break;
            pos = end + 4;
        }
        else {
            PyErr_Format(PyExc_RuntimeError, "fast HTTP framer in state %d", st);
            rc = ERR;
            break;
        }
        continue;
    bail:
        s->state = HEAD;
        *rest = PyBytes_FromStringAndSize(p + pos, n - pos);
        rc = *rest == NULL ? ERR : BAIL;
        break;
    }
    Py_DECREF(buf);
    return rc;
}

static int
queue_if_done(FastObject *self)
{
    if (self->ndone && !self->queued) {
        self->queued = 1;
        return PyList_Append(self->ctx->ready, (PyObject *)self);
    }
    return 0;
}

/* packet(record, is_orig): HttpAnalyzer.packet */
static PyObject *
fast_packet(FastObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "packet(record, is_orig)");
        return NULL;
    }
    PyObject *r = args[0];
    int is_orig = PyObject_IsTrue(args[1]);
    if (is_orig < 0)
        return NULL;
    if (self->released) {
        PyErr_SetString(PyExc_RuntimeError, "this FastHttp handed its state over");
        return NULL;
    }
    int64_t flags, seq, ack = 0, plen, ts = 0;
    if (get_i64(r, off_flags, &flags) < 0 || get_i64(r, off_seq, &seq) < 0
        || get_i64(r, off_plen, &plen) < 0)
        return NULL;
    if (plen && !(flags & SYN) && (get_i64(r, off_ack, &ack) < 0 || get_i64(r, off_ts, &ts) < 0))
        return NULL;
    int d = is_orig ? 0 : 1, peer = 1 - d;
    PyObject *rest = NULL;
    if (flags & SYN) {
        if (self->next[d] == NONE_SEQ)
            self->next[d] = (seq + 1) & MASK;
    }
    else if (plen == 0) {
        if (flags & FIN)
            self->fin[d] = seq & MASK;
    }
    else {
        PyObject *payload = slot(r, off_payload);
        if (payload == NULL || !PyBytes_Check(payload)) {
            PyErr_SetString(PyExc_TypeError, "packet record payload is not bytes");
            return NULL;
        }
        int64_t nxt = self->next[peer];
        if (flags & ACK && nxt != NONE_SEQ && ack != nxt) {
            int64_t pf = self->fin[peer];
            int64_t dack = (pf != NONE_SEQ && ack == ((pf + 1) & MASK)) ? pf : ack;
            if (dist(dack, nxt) > 0)
                goto bail_packet;  /* a reordered copy that waits: the Python analyzer's */
        }
        if (PyBytes_GET_SIZE(payload) != plen
            || (self->next[d] != NONE_SEQ && seq != self->next[d]))
            goto bail_packet;  /* cut by the capture, or out of order */
        if (flags & FIN)
            self->fin[d] = (seq + plen) & MASK;
        if (self->next[d] == NONE_SEQ)
            self->midstream[d] = 1;  /* Direction.segment: starts at its first data */
        self->segments++;
        self->next[d] = (seq + plen) & MASK;
        int rc = feed(self, is_orig, payload, ts, &rest);
        if (rc == ERR)
            return NULL;
        if (rc == BAIL)
            goto bail;  /* (the Python analyzer queues what was finished before this point) */
    }
    if (queue_if_done(self) < 0)
        return NULL;
    Py_RETURN_NONE;

bail_packet:
    rest = Py_NewRef(Py_None);
bail:;
    PyObject *bargs[4] = {(PyObject *)self, r, is_orig ? Py_True : Py_False, rest};
    PyObject *res = PyObject_Vectorcall(self->ctx->bail, bargs, 4, NULL);
    Py_DECREF(rest);
    return res;
}

/* start_dir(is_orig, seq): a direction whose first data the engine held without its SYN */
static PyObject *
fast_start_dir(FastObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "start_dir(is_orig, seq)");
        return NULL;
    }
    int is_orig = PyObject_IsTrue(args[0]);
    long long seq = PyLong_AsLongLong(args[1]);
    if (is_orig < 0 || (seq == -1 && PyErr_Occurred()))
        return NULL;
    int d = is_orig ? 0 : 1;
    if (self->next[d] == NONE_SEQ) {
        self->next[d] = seq & MASK;
        self->midstream[d] = 1;
    }
    Py_RETURN_NONE;
}

/* -- records ------------------------------------------------------------------------------- */

static int
flow_texts(FastObject *self)
{
    if (self->texts != NULL)
        return 0;
    PyObject *f = self->flow;
    PyObject *cid = PyObject_CallMethod(f, "cid_cache", NULL);
    PyObject *addrs = cid ? PyObject_CallMethod(f, "addr_texts", NULL) : NULL;
    PyObject *conn = addrs ? PyObject_CallMethod(f, "conn_uid_cache", NULL) : NULL;
    PyObject *vni = conn ? PyObject_GetAttrString(f, "vni") : NULL;
    PyObject *sp = vni ? PyObject_GetAttrString(f, "orig_port") : NULL;
    PyObject *dp = sp ? PyObject_GetAttrString(f, "resp_port") : NULL;
    PyObject *dir = dp ? PyObject_GetAttrString(f, "direction") : NULL;
    if (dir != NULL && PyTuple_Check(addrs) && PyTuple_GET_SIZE(addrs) == 2)
        self->texts = PyTuple_Pack(8, conn, cid, vni, PyTuple_GET_ITEM(addrs, 0), sp,
                                   PyTuple_GET_ITEM(addrs, 1), dp, dir);
    else if (dir != NULL)
        PyErr_SetString(PyExc_TypeError, "flow.addr_texts() must give two texts");
    Py_XDECREF(cid);
    Py_XDECREF(addrs);
    Py_XDECREF(conn);
    Py_XDECREF(vni);
    Py_XDECREF(sp);
    Py_XDECREF(dp);
    Py_XDECREF(dir);
    return self->texts == NULL ? -1 : 0;
}

/* n / 1e9 as Python's int true division gives it: the correctly rounded double (round half to
 * even). Below 2**53 both operands are exact doubles, so one division is correctly rounded;
 * above, the quotient is computed with 53 significant bits and a remainder in 128-bit
 * integers, then rounded. (PyNumber_TrueDivide on a new int cost more than the record.) */
static PyObject *
seconds(int64_t n)
{
    if (n >= 0 && n < ((int64_t)1 << 53))
        return PyFloat_FromDouble((double)n / 1e9);
    if (n < 0) {
        PyObject *big = PyLong_FromLongLong(n);
        PyObject *r = big ? PyNumber_TrueDivide(big, NS_obj) : NULL;
        Py_XDECREF(big);
        return r;
    }
    const uint64_t d = 1000000000u;
    uint64_t q = (uint64_t)n / d;
    int bits = 64 - __builtin_clzll(q);          /* q >= 2**53 / 1e9 > 0 */
    int s = 53 - bits;                           /* > 0: q < 2**34 */
    unsigned __int128 num = (unsigned __int128)(uint64_t)n << s;
    uint64_t m = (uint64_t)(num / d), rem = (uint64_t)(num % d);
    if (2 * rem > d || (2 * rem == d && (m & 1)))
        m++;
    return PyFloat_FromDouble(ldexp((double)m, -s));
}

static inline PyObject *
or_none(PyObject *v)
{
    return v ? v : Py_None;
}

/* f"{conn}-{depth}" (the connection id is ASCII hex; anything else takes the general way) */
static PyObject *
http_id(PyObject *conn, int64_t depth)
{
    char num[24], *e = num + sizeof num, *q = e;
    uint64_t v = depth < 0 ? 0 - (uint64_t)depth : (uint64_t)depth;
    do
        *--q = (char)('0' + v % 10);
    while (v /= 10);
    if (depth < 0)
        *--q = '-';
    *--q = '-';
    int k = (int)(e - q);
    memmove(num, q, (size_t)k);
    num[k] = 0;  /* (room: at most 22 of the 24 bytes are used) */
    if (!PyUnicode_Check(conn) || !PyUnicode_IS_ASCII(conn))
        return PyUnicode_FromFormat("%U%s", conn, num);
    Py_ssize_t n = PyUnicode_GET_LENGTH(conn);
    PyObject *s = PyUnicode_New(n + k, 127);
    if (s == NULL)
        return NULL;
    memcpy(PyUnicode_1BYTE_DATA(s), PyUnicode_1BYTE_DATA(conn), (size_t)n);
    memcpy(PyUnicode_1BYTE_DATA(s) + n, num, (size_t)k);
    return s;
}

/* L7.emit for one exchange: append its HttpTransaction to out */
static int
emit(FastObject *self, Txn *t, PyObject *out)
{
    PyObject *x = self->texts;
    int has_req = t->f[F_METHOD] != NULL;
    int has_resp_ts = t->has_resp_ts;
    int64_t resp_ts = t->resp_ts;
    if (has_resp_ts && resp_ts < t->ts && has_req) {
        if (txn_tag(t, s_reordered) < 0)
            return -1;
        has_resp_ts = 0;
    }
    int64_t when = has_req ? t->ts : (has_resp_ts && resp_ts ? resp_ts : t->ts);
    PyObject *vals[6] = {NULL};
    int rc = -1;
    vals[0] = http_id(PyTuple_GET_ITEM(x, 0), t->depth);
    vals[1] = vals[0] ? seconds(when) : NULL;
    vals[2] = vals[1] ? PyLong_FromLongLong(t->depth) : NULL;
    if (vals[2] == NULL)
        goto done;
    if (t->status >= 0 && (vals[3] = PyLong_FromLong(t->status)) == NULL)
        goto done;
    if (has_resp_ts && has_req && (vals[4] = seconds(resp_ts - t->ts)) == NULL)
        goto done;
    if (t->tags == NULL && (t->tags = new_tags()) == NULL)
        goto done;
    PyObject *rb = PyLong_FromLongLong(t->req_body), *sb = PyLong_FromLongLong(t->resp_body);
    if (rb == NULL || sb == NULL) {
        Py_XDECREF(rb);
        Py_XDECREF(sb);
        goto done;
    }
    PyObject *args[28] = {
        vals[0], vals[1], PyTuple_GET_ITEM(x, 1), PyTuple_GET_ITEM(x, 2), PyTuple_GET_ITEM(x, 3),
        PyTuple_GET_ITEM(x, 4), PyTuple_GET_ITEM(x, 5), PyTuple_GET_ITEM(x, 6), vals[2],
        or_none(t->f[F_METHOD]), or_none(t->f[F_HOST]), or_none(t->f[F_URI]),
        or_none(t->f[F_VERSION]), or_none(t->f[F_UA]), or_none(t->f[F_REFERRER]),
        or_none(vals[3]), or_none(t->f[F_REASON]), rb, sb, or_none(t->f[F_REQ_CTYPE]),
        or_none(t->f[F_RESP_CTYPE]), or_none(vals[4]), t->tags, or_none(t->f[F_AUTH]),
        or_none(t->f[F_PROXY_AUTH]), or_none(t->f[F_COOKIE]), or_none(t->f[F_SET_COOKIE]),
        PyTuple_GET_ITEM(x, 7),
    };
    PyObject *rec = PyObject_Vectorcall(record_type, args, 28, NULL);
    Py_DECREF(rb);
    Py_DECREF(sb);
    if (rec != NULL) {
        rc = PyList_Append(out, rec);
        Py_DECREF(rec);
    }
done:
    for (int i = 0; i < 6; i++)
        Py_XDECREF(vals[i]);
    return rc;
}

static int
emit_done(FastObject *self, PyObject *out)
{
    if (self->ndone == 0)
        return 0;
    if (flow_texts(self) < 0)
        return -1;
    Py_ssize_t i = 0;
    int rc = 0;
    for (; i < self->ndone; i++) {
        if (emit(self, self->done[i], out) < 0) {
            rc = -1;
            break;
        }
    }
    /* what was made is gone either way (an error loses no more than the flow boundary) */
    for (Py_ssize_t j = 0; j < self->ndone; j++)
        txn_free(self->done[j]);
    self->ndone = 0;
    return rc;
}

/* take(out): the records of the finished exchanges (L7.take) */
static PyObject *
fast_take(FastObject *self, PyObject *out)
{
    if (!PyList_Check(out)) {
        PyErr_SetString(PyExc_TypeError, "take(out): out must be a list");
        return NULL;
    }
    self->queued = 0;
    if (emit_done(self, out) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* finish(ts, out) -> bool: the connection ended (HttpAnalyzer.finish and L7.emit). False,
 * with nothing changed, where the Python analyzer is needed: a gap up to a FIN, or a head
 * cut by the end. */
static PyObject *
fast_finish(FastObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "finish(ts, out)");
        return NULL;
    }
    if (self->released)
        Py_RETURN_FALSE;
    for (int d = 0; d < 2; d++) {
        if (self->fin[d] != NONE_SEQ && self->next[d] != NONE_SEQ
            && dist(self->fin[d], self->next[d]) > 0)
            Py_RETURN_FALSE;
        if (self->st[d].state == HEAD)
            Py_RETURN_FALSE;
    }
    for (int d = 0; d < 2; d++) {  /* Direction.end -> MessageStream.end, requests first */
        Stream *s = &self->st[d];
        if (s->state == BODY && s->txn != NULL) {
            if (txn_tag(s->txn, s_truncated) < 0 || end_message(self, d == 0) < 0)
                return NULL;
        }
        s->state = TUNNEL;
    }
    for (Py_ssize_t i = 0; i < self->npend; i++) {  /* HttpConversation.finish */
        Txn *t = self->pend[i];
        if (t->status < 0 && txn_tag(t, s_no_response) < 0)
            return NULL;
        if (push(&self->done, &self->ndone, &self->cdone, t) < 0)
            return NULL;
        self->pend[i] = NULL;
    }
    self->npend = 0;
    if (emit_done(self, args[1]) < 0)
        return NULL;
    self->released = 1;
    Py_RETURN_TRUE;
}

/* -- state ------------------------------------------------------------------------------------ */

static PyObject *
txn_parts(Txn *t)
{
    PyObject *tup = PyTuple_New(22);
    if (tup == NULL)
        return NULL;
    PyObject *tags = t->tags ? PyList_GetSlice(t->tags, 0, PyList_GET_SIZE(t->tags))
                             : PyList_New(0);
    PyObject *v[22] = {
        PyLong_FromLongLong(t->ts), PyLong_FromLongLong(t->depth), tags,
    };
    for (int i = 0; i < NF; i++)
        v[3 + i] = Py_NewRef(or_none(t->f[i]));
    v[17] = t->status >= 0 ? PyLong_FromLong(t->status) : Py_NewRef(Py_None);
    v[18] = t->has_resp_ts ? PyLong_FromLongLong(t->resp_ts) : Py_NewRef(Py_None);
    v[19] = PyLong_FromLongLong(t->req_body);
    v[20] = PyLong_FromLongLong(t->resp_body);
    v[21] = Py_NewRef(t->req_done ? Py_True : Py_False);
    int bad = 0;
    for (int i = 0; i < 22; i++) {
        if (v[i] == NULL)
            bad = 1;
        PyTuple_SET_ITEM(tup, i, v[i] ? v[i] : Py_NewRef(Py_None));
    }
    if (bad) {
        Py_DECREF(tup);
        return NULL;
    }
    return tup;
}

static Py_ssize_t
txn_index(FastObject *self, Txn *t)
{
    if (t == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < self->npend; i++)
        if (self->pend[i] == t)
            return i;
    for (Py_ssize_t i = 0; i < self->ndone; i++)
        if (self->done[i] == t)
            return self->npend + i;
    return -2;
}

static PyObject *
seq_or_none(int64_t v)
{
    return v == NONE_SEQ ? Py_NewRef(Py_None) : PyLong_FromLongLong(v);
}

/* parts() -> the state as plain tuples, which l7.py makes an HttpAnalyzerState of:
 * (txns, pending, done, (requests, responses), depth, (orig, resp), fin_orig, fin_resp,
 *  segments) with txns = TxnState fields, pending/done = indexes into txns, a stream =
 *  (state, buf, remaining, txn index, msg_ts, scan), a direction = (next_seq, cap,
 *  midstream). */
static PyObject *
fast_parts(FastObject *self, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t nt = self->npend + self->ndone;
    PyObject *txns = PyList_New(nt), *pend = PyList_New(self->npend),
             *done = PyList_New(self->ndone);
    PyObject *res = NULL;
    if (txns == NULL || pend == NULL || done == NULL)
        goto out;
    for (Py_ssize_t i = 0; i < nt; i++) {
        Txn *t = i < self->npend ? self->pend[i] : self->done[i - self->npend];
        PyObject *p = txn_parts(t);
        if (p == NULL)
            goto out;
        PyList_SET_ITEM(txns, i, p);
    }
    for (Py_ssize_t i = 0; i < self->npend; i++)
        PyList_SET_ITEM(pend, i, PyLong_FromSsize_t(i));
    for (Py_ssize_t i = 0; i < self->ndone; i++)
        PyList_SET_ITEM(done, i, PyLong_FromSsize_t(self->npend + i));
    PyObject *streams[2] = {NULL, NULL}, *dirs[2] = {NULL, NULL};
    for (int d = 0; d < 2; d++) {
        Stream *s = &self->st[d];
        Py_ssize_t ti = txn_index(self, s->txn);
        if (ti == -2) {
            PyErr_SetString(PyExc_RuntimeError, "a stream's exchange is not held");
            goto out;
        }
        PyObject *b = s->buf ? Py_NewRef(s->buf) : PyBytes_FromStringAndSize(NULL, 0);
        streams[d] = b ? Py_BuildValue("(iNLnLn)", s->state, b, (long long)s->remaining, ti,
                                       (long long)s->msg_ts, s->scan) : NULL;
        PyObject *nx = seq_or_none(self->next[d]);
        dirs[d] = nx ? Py_BuildValue("(NLO)", nx, (long long)self->cap,
                                     self->midstream[d] ? Py_True : Py_False) : NULL;
    }
    if (streams[0] && streams[1] && dirs[0] && dirs[1]) {
        PyObject *f0 = seq_or_none(self->fin[0]), *f1 = seq_or_none(self->fin[1]);
        if (f0 && f1)
            res = Py_BuildValue("(OOO(OO)L(OO)NNn)", txns, pend, done, streams[0], streams[1],
                                (long long)self->depth, dirs[0], dirs[1], f0, f1,
                                self->segments);
        else {
            Py_XDECREF(f0);
            Py_XDECREF(f1);
        }
    }
    for (int d = 0; d < 2; d++) {
        Py_XDECREF(streams[d]);
        Py_XDECREF(dirs[d]);
    }
out:
    Py_XDECREF(txns);
    Py_XDECREF(pend);
    Py_XDECREF(done);
    return res;
}

/* to_state() -> HttpAnalyzerState (a flow's stored form holds its analyzer's) */
static PyObject *
fast_to_state(FastObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *parts = fast_parts(self, NULL);
    if (parts == NULL)
        return NULL;
    PyObject *st = PyObject_CallOneArg(self->ctx->state, parts);
    Py_DECREF(parts);
    return st;
}

/* release(): its state now lives in a Python analyzer; this one makes nothing more */
static PyObject *
fast_release(FastObject *self, PyObject *Py_UNUSED(ignored))
{
    self->released = 1;
    self->queued = 0;
    fast_drop_txns(self);
    Py_CLEAR(self->st[0].buf);
    Py_CLEAR(self->st[1].buf);
    Py_RETURN_NONE;
}

static PyObject *
fast_get_flow(FastObject *self, void *Py_UNUSED(c))
{
    return Py_NewRef(self->flow ? self->flow : Py_None);
}

static PyObject *
fast_get_queued(FastObject *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->queued);
}

static PyObject *
fast_get_segments(FastObject *self, void *Py_UNUSED(c))
{
    return PyLong_FromSsize_t(self->segments);
}

static PyGetSetDef fast_getset[] = {
    {"flow", (getter)fast_get_flow, NULL, "the flow this connection is", NULL},
    {"queued", (getter)fast_get_queued, NULL, "whether it is in the engine's ready list", NULL},
    {"segments", (getter)fast_get_segments, NULL, "data segments it was given", NULL},
    {NULL},
};

static PyMethodDef fast_methods[] = {
    {"packet", (PyCFunction)(void (*)(void))fast_packet, METH_FASTCALL,
     PyDoc_STR("packet(record, is_orig): one segment of the connection")},
    {"start_dir", (PyCFunction)(void (*)(void))fast_start_dir, METH_FASTCALL,
     PyDoc_STR("start_dir(is_orig, seq): a direction without its SYN starts at seq")},
    {"take", (PyCFunction)fast_take, METH_O,
     PyDoc_STR("take(out): append the finished exchanges' HttpTransaction records to out")},
    {"finish", (PyCFunction)(void (*)(void))fast_finish, METH_FASTCALL,
     PyDoc_STR("finish(ts, out) -> bool: end the connection (False: the Python analyzer "
               "must, nothing was changed)")},
    {"parts", (PyCFunction)fast_parts, METH_NOARGS, PyDoc_STR("the state as plain tuples")},
    {"to_state", (PyCFunction)fast_to_state, METH_NOARGS,
     PyDoc_STR("the stored form: an HttpAnalyzerState")},
    {"release", (PyCFunction)fast_release, METH_NOARGS,
     PyDoc_STR("hand over: make nothing more")},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FastType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stream_app._fastconn.FastHttp",
    .tp_basicsize = sizeof(FastObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("FastHttp(context, flow, isn_orig, isn_resp, reassembly_cap): the "
                        "common case of stream_app.core.l7.HttpAnalyzer in C"),
    .tp_new = fast_new,
    .tp_dealloc = (destructor)fast_dealloc,
    .tp_traverse = (traverseproc)fast_traverse,
    .tp_clear = (inquiry)fast_clear,
    .tp_methods = fast_methods,
    .tp_getset = fast_getset,
};

/* -- module ------------------------------------------------------------------------------------ */

static int
member_offset(PyObject *type, const char *name, Py_ssize_t *off)
{
    PyObject *dict = PyObject_GetAttrString(type, "__dict__");
    if (dict == NULL)
        return -1;
    PyObject *d = PyMapping_GetItemString(dict, name);
    Py_DECREF(dict);
    if (d == NULL)
        return -1;
    int ok = Py_IS_TYPE(d, &PyMemberDescr_Type);
    if (ok) {
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        ok = m->type == T_OBJECT_EX || m->type == T_OBJECT;
        *off = m->offset;
    }
    Py_DECREF(d);
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "the packet record's %s is not an object slot", name);
        return -1;
    }
    return 0;
}

/* setup(record_type, packet_type, redact_auth, redact_cookie) */
static PyObject *
fc_setup(PyObject *Py_UNUSED(m), PyObject *args)
{
    PyObject *rt, *pt, *ra, *rc;
    if (!PyArg_ParseTuple(args, "OO!OO", &rt, &PyType_Type, &pt, &ra, &rc))
        return NULL;
    if (member_offset(pt, "ts_ns", &off_ts) < 0 || member_offset(pt, "tcp_flags", &off_flags) < 0
        || member_offset(pt, "seq", &off_seq) < 0 || member_offset(pt, "ack", &off_ack) < 0
        || member_offset(pt, "payload_len", &off_plen) < 0
        || member_offset(pt, "payload", &off_payload) < 0)
        return NULL;
    Py_XSETREF(record_type, Py_NewRef(rt));
    Py_XSETREF(redact_auth, Py_NewRef(ra));
    Py_XSETREF(redact_cookie, Py_NewRef(rc));
    Py_RETURN_NONE;
}

/* _seconds(n): seconds() for the tests (held equal to n / 10**9) */
static PyObject *
fc_seconds(PyObject *Py_UNUSED(m), PyObject *arg)
{
    long long n = PyLong_AsLongLong(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    return seconds(n);
}

static PyMethodDef fc_methods[] = {
    {"_seconds", fc_seconds, METH_O, PyDoc_STR("_seconds(ns) -> ns / 10**9, as the records get it")},
    {"setup", fc_setup, METH_VARARGS,
     PyDoc_STR("setup(HttpTransaction, PacketRecord, redact_auth, redact_cookie): bind the "
               "Python parts (once, by stream_app.core.l7)")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fc_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "stream_app._fastconn",
    .m_doc = PyDoc_STR("C fast path of one HTTP connection (stream_app.core.l7.HttpAnalyzer)."),
    .m_size = -1,
    .m_methods = fc_methods,
};

static int
intern(PyObject **slot_, const char *s)
{
    if (*slot_ == NULL)
        *slot_ = PyUnicode_InternFromString(s);
    return *slot_ == NULL ? -1 : 0;
}

PyMODINIT_FUNC
PyInit__fastconn(void)
{
    for (int i = 0; i < NF; i++)
        if (intern(&s_field[i], field_names[i]) < 0)
            return NULL;
    if (intern(&s_pipelined, "pipelined") < 0 || intern(&s_reordered, "reordered") < 0
        || intern(&s_truncated, "truncated") < 0 || intern(&s_no_response, "no_response") < 0
        || intern(&s_at, "@") < 0 || intern(&s_HEAD, "HEAD") < 0)
        return NULL;
    if (NS_obj == NULL && (NS_obj = PyLong_FromLong(1000000000L)) == NULL)
        return NULL;
    if (fh == NULL) {  /* stream_app._fasthttp's head scanner (imported first: PyCapsule_Import
                          only walks attributes of what is imported) */
        PyObject *mod = PyImport_ImportModule("stream_app._fasthttp");
        if (mod == NULL)
            return NULL;
        Py_DECREF(mod);
        if ((fh = PyCapsule_Import(FH_API_CAPSULE, 0)) == NULL)
            return NULL;
    }
    if (PyType_Ready(&CtxType) < 0 || PyType_Ready(&FastType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fc_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Context", (PyObject *)&CtxType) < 0
        || PyModule_AddObjectRef(m, "FastHttp", (PyObject *)&FastType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
