/*
 * stream_app._fasthttp: the C fast path of stream_app.core.http.parse_head.
 *
 * stream_app/core/http.py (parse_head, with _headers / _WANTED / _TOKEN / _text) is the
 * specification. parse_head(head, is_request) here returns either a result equal (==, same
 * types) to the Python one, or the module attribute DECLINE, on which the caller runs the
 * Python version. Declined (rare) inputs:
 *   - head is not a bytes object;
 *   - the header block holds obsolete line folding (b"\n " or b"\n\t", which the Python
 *     version unfolds first);
 *   - a Content-Length value with more than 640 digits (int() of a long digit string may
 *     raise ValueError, depending on sys.set_int_max_str_digits).
 *
 * What is emulated exactly:
 *   - first = head up to the first "\n", trailing "\r"s removed; rest = from that "\n" on;
 *   - request: first.split() on b" \t\n\r\x0b\x0c"; the method must fullmatch
 *     [A-Za-z][A-Za-z0-9_-]{0,19}; URI truncated to MAX_URI bytes; version = third part
 *     after "HTTP/"; malformed_request when not exactly 3 parts, no version or not exactly
 *     two spaces in the line; of two parts, "METHOD HTTP/x" is an empty target and that
 *     version (malformed_request), else a method of 3+ bytes makes HTTP/0.9 (tag http09);
 *   - response: first starts with "HTTP/" (in any case; tag lowercase_status_line when not
 *     upper), len >= 12, a space at [8] and three ASCII digits at [9:12] (the status);
 *   - text: bytes.decode("utf-8", "backslashreplace") (CPython's own decoder is called);
 *   - headers: the _WANTED regex: at every "\n", one of the wanted names (ASCII
 *     case-insensitive), [ \t]*, ":", [ \t]*, the value up to the first "\r" or "\n" less
 *     trailing [ \t]; the match only holds when that "\r"/"\n" is "\r\n", "\n" or the end of
 *     the block;
 *   - Content-Length: 1*DIGIT (RFC 9110 8.6), leading zeros allowed, at most 19 significant
 *     digits and at most MAX_CONTENT_LENGTH; anything else is invalid.
 *
 * Every read is bounded by the end of the bytes object.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_fasthttp_api.h"

#define MAX_URI 8192
#define MAX_CONTENT_LENGTH ((uint64_t)1 << 62)

static PyObject *DECLINE;

/* interned Txn attribute names and tags */
static PyObject *s_host, *s_user_agent, *s_referrer, *s_req_ctype, *s_auth, *s_proxy_auth,
    *s_cookie, *s_resp_ctype, *s_set_cookie;
static PyObject *s_malformed_request, *s_bad_cl, *s_conflicting_cl, *s_te_and_cl;
static PyObject *s_http09, *s_lowercase_status, *s_v09;

static unsigned char lc[256];       /* ASCII lower case */
static unsigned char split_ws[256]; /* bytes.split() white space */
static unsigned char tok_rest[256]; /* [A-Za-z0-9_-] */


static inline int
is_alpha(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static inline int
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Whether p[0:n] equals the lower-case literal lit, ASCII case-insensitively. */
static inline int
ieq(const unsigned char *p, const unsigned char *end, const char *lit, Py_ssize_t n)
{
    if (end - p < n)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (lc[p[i]] != (unsigned char)lit[i])
            return 0;
    return 1;
}

#define TRY(lit, kind)                                     \
    do {                                                   \
        if (ieq(p, end, lit, (Py_ssize_t)sizeof(lit) - 1)) { \
            *after = p + sizeof(lit) - 1;                  \
            return kind;                                   \
        }                                                  \
    } while (0)

/* Which wanted header name starts at p (p < end); *after = the byte after it. */
static int
match_name(const unsigned char *p, const unsigned char *end, const unsigned char **after)
{
    switch (lc[p[0]]) {
    case 'c':
        TRY("content-length", H_CL);
        TRY("content-type", H_CTYPE);
        TRY("cookie", H_COOKIE);
        break;
    case 't':
        TRY("transfer-encoding", H_TE);
        break;
    case 'h':
        TRY("host", H_HOST);
        break;
    case 'u':
        TRY("user-agent", H_UA);
        break;
    case 'r':
        TRY("referer", H_REFERER);
        break;
    case 'a':
        TRY("authorization", H_AUTH);
        break;
    case 'p':
        TRY("proxy-authorization", H_PAUTH);
        break;
    case 's':
        TRY("set-cookie", H_SETCOOKIE);
        break;
    default:
        break;
    }
    return H_NONE;
}

#undef TRY

static inline PyObject *
text(const unsigned char *s, Py_ssize_t n)
{
    return PyUnicode_DecodeUTF8((const char *)s, n, "backslashreplace");
}

/* Content-Length: 1*DIGIT (leading zeros allowed); -1 when invalid or above
 * MAX_CONTENT_LENGTH (at most 19 significant digits, as the Python reference reads). */
static int64_t
content_length(const unsigned char *s, const unsigned char *e)
{
    if (s >= e)
        return -1;
    for (const unsigned char *q = s; q < e; q++)
        if (!is_digit(*q))
            return -1;
    while (e - s > 1 && *s == '0')
        s++;
    if (e - s > 19)
        return -1;
    uint64_t v = 0;
    for (; s < e; s++)
        v = v * 10 + (uint64_t)(*s - '0');  /* 19 digits fit in 64 bits */
    if (v > MAX_CONTENT_LENGTH)
        return -1;
    return (int64_t)v;
}

static inline int
has_chunked(const unsigned char *s, const unsigned char *e)
{
    static const char lit[] = "chunked";
    for (; e - s >= 7; s++)
        if (lc[s[0]] == 'c' && ieq(s, e, lit, 7))
            return 1;
    return 0;
}

static inline int
append_new(PyObject *list, PyObject *item)
{
    if (item == NULL)
        return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

/* The start line of a head: positions only (nothing is built before the headers are known
 * good). */
typedef struct {
    const unsigned char *buf, *end, *nl, *fe;  /* head, its end, the first "\n", line end */
    Py_ssize_t flen;
    const unsigned char *ps[3], *pe[3];        /* request: up to three parts */
    int nparts, malformed, lower;
    enum { TWO_NONE, TWO_NO_TARGET, TWO_HTTP09 } two;
    long status;                               /* response */
} start_line;

/* 0: the line begins no message (parse_head's None); 1: read into *sl */
static int
read_start_line(const unsigned char *buf, Py_ssize_t n, int is_request, start_line *sl)
{
    memset(sl, 0, sizeof(*sl));
    sl->buf = buf;
    sl->end = buf + n;
    sl->nl = memchr(buf, '\n', (size_t)n);
    const unsigned char *fe = sl->nl ? sl->nl : sl->end; /* end of the first line */
    while (fe > buf && fe[-1] == '\r')
        fe--;
    sl->fe = fe;
    sl->flen = fe - buf;
    if (is_request) {
        Py_ssize_t spaces = 0;
        const unsigned char *q = buf;
        while (q < fe) {
            while (q < fe && split_ws[*q]) {
                spaces += *q == ' ';
                q++;
            }
            if (q >= fe)
                break;
            const unsigned char *s = q;
            while (q < fe && !split_ws[*q])
                q++;
            if (sl->nparts < 3) {
                sl->ps[sl->nparts] = s;
                sl->pe[sl->nparts] = q;
            }
            sl->nparts++;
        }
        if (sl->nparts == 0)
            return 0;
        Py_ssize_t mlen = sl->pe[0] - sl->ps[0];
        if (mlen > 20 || !is_alpha(sl->ps[0][0]))
            return 0;
        for (Py_ssize_t i = 1; i < mlen; i++)
            if (!tok_rest[sl->ps[0][i]])
                return 0;
        if (sl->nparts == 2 && sl->pe[1] - sl->ps[1] >= 5 && memcmp(sl->ps[1], "HTTP/", 5) == 0) {
            sl->two = TWO_NO_TARGET;  /* "GET HTTP/1.1": empty target, that version */
            sl->malformed = 1;
        }
        else if (sl->nparts == 2 && mlen >= 3) {
            sl->two = TWO_HTTP09;  /* method and URI, no version: HTTP/0.9 */
        }
        else {
            int has_version = sl->nparts > 2 && sl->pe[2] - sl->ps[2] >= 5
                              && memcmp(sl->ps[2], "HTTP/", 5) == 0;
            if (sl->nparts != 3 || !has_version || spaces != 2)
                sl->malformed = 1;
            if (!has_version)
                sl->nparts = sl->nparts < 2 ? sl->nparts : 2; /* no version to decode */
        }
    }
    else {
        if (sl->flen < 5 || lc[buf[0]] != 'h' || lc[buf[1]] != 't' || lc[buf[2]] != 't'
            || lc[buf[3]] != 'p' || buf[4] != '/')
            return 0;
        sl->lower = memcmp(buf, "HTTP/", 5) != 0;  /* "http/1.1": read, and tagged */
        if (sl->flen < 12)
            return 0;
        /* HTTP-version SP 3DIGIT */
        if (buf[8] != ' ' || !is_digit(buf[9]) || !is_digit(buf[10]) || !is_digit(buf[11]))
            return 0;
        sl->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    }
    return 1;
}

/* The next wanted header of a header block, from *pp (at a "\n") on: its kind (H_NONE: no
 * more), its value in [*vs, *ve) and *pp moved past it; -1 on obsolete line folding (the
 * Python version unfolds it first, so the caller declines). */
static int
next_header(const unsigned char **pp, const unsigned char *end, const unsigned char **vs,
            const unsigned char **ve)
{
    const unsigned char *p = *pp;
    for (;;) {
        const unsigned char *lf = memchr(p, '\n', (size_t)(end - p));
        if (lf == NULL)
            break;
        const unsigned char *s = lf + 1;
        p = s;
        if (s >= end)
            break;
        if (*s == ' ' || *s == '\t')
            return -1;
        const unsigned char *q;
        int kind = match_name(s, end, &q);
        if (kind == H_NONE)
            continue;
        while (q < end && (*q == ' ' || *q == '\t'))
            q++;
        if (q >= end || *q != ':')
            continue;
        q++;
        while (q < end && (*q == ' ' || *q == '\t'))
            q++;
        const unsigned char *v = q;
        while (q < end && *q != '\r' && *q != '\n')
            q++;
        /* the lookahead (?=\r?\n|$) */
        if (!(q == end || *q == '\n' || (q + 1 < end && q[1] == '\n')))
            continue;
        p = q;
        const unsigned char *e = q;
        while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        *vs = v;
        *ve = e;
        *pp = p;
        return kind;
    }
    *pp = end;
    return H_NONE;
}

static PyObject *
fh_parse_head(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "parse_head(head, is_request) takes 2 arguments");
        return NULL;
    }
    PyObject *head = args[0];
    if (!PyBytes_Check(head))
        return Py_NewRef(DECLINE);
    int is_request = PyObject_IsTrue(args[1]);
    if (is_request < 0)
        return NULL;

    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(head);
    const Py_ssize_t n = PyBytes_GET_SIZE(head);
    start_line sl;
    if (!read_start_line(buf, n, is_request, &sl))
        Py_RETURN_NONE;
    const unsigned char *nl = sl.nl, *end = sl.end;
    const Py_ssize_t flen = sl.flen;
    const unsigned char *const *ps = sl.ps, *const *pe = sl.pe;
    const int nparts = sl.nparts, malformed = sl.malformed, lower = sl.lower;
    const int two = sl.two;
    const long status = sl.status;

    /* headers */
    PyObject *tags = PyList_New(0);
    PyObject *fields = PyList_New(0);
    PyObject *a = NULL, *b = NULL, *c = NULL, *len_obj = NULL, *res = NULL;
    if (tags == NULL || fields == NULL)
        goto error;
    if (malformed && PyList_Append(tags, s_malformed_request) < 0)
        goto error;
    if (two == TWO_HTTP09 && PyList_Append(tags, s_http09) < 0)
        goto error;
    if (lower && PyList_Append(tags, s_lowercase_status) < 0)
        goto error;
    int64_t length = -1;
    int chunked = 0, bad = 0, conflicting = 0;
    if (nl != NULL) {
        const unsigned char *p = nl, *vs, *ve;
        int kind;
        while ((kind = next_header(&p, end, &vs, &ve)) != H_NONE) {
            if (kind < 0)
                goto decline; /* obs-fold: the Python version unfolds it */
            PyObject *attr = NULL;
            switch (kind) {
            case H_CL: {
                int64_t v = content_length(vs, ve);
                if (v < 0) {
                    if (!bad) {
                        bad = 1;
                        if (PyList_Append(tags, s_bad_cl) < 0)
                            goto error;
                    }
                    continue;
                }
                if (length >= 0 && v != length && !conflicting) {
                    conflicting = 1;
                    if (PyList_Append(tags, s_conflicting_cl) < 0)
                        goto error;
                }
                length = v;
                continue;
            }
            case H_TE:
                if (has_chunked(vs, ve))
                    chunked = 1;
                continue;
            case H_HOST: attr = is_request ? s_host : NULL; break;
            case H_UA: attr = is_request ? s_user_agent : NULL; break;
            case H_REFERER: attr = is_request ? s_referrer : NULL; break;
            case H_CTYPE: attr = is_request ? s_req_ctype : s_resp_ctype; break;
            case H_AUTH: attr = is_request ? s_auth : NULL; break;
            case H_PAUTH: attr = is_request ? s_proxy_auth : NULL; break;
            case H_COOKIE: attr = is_request ? s_cookie : NULL; break;
            case H_SETCOOKIE: attr = is_request ? NULL : s_set_cookie; break;
            default: break;
            }
            if (attr == NULL)
                continue;
            PyObject *val = text(vs, ve - vs);
            if (val == NULL)
                goto error;
            PyObject *pair = PyTuple_New(2);
            if (pair == NULL) {
                Py_DECREF(val);
                goto error;
            }
            PyTuple_SET_ITEM(pair, 0, Py_NewRef(attr));
            PyTuple_SET_ITEM(pair, 1, val);
            if (append_new(fields, pair) < 0)
                goto error;
        }
    }
    if (chunked && length >= 0 && PyList_Append(tags, s_te_and_cl) < 0)
        goto error;

    /* start line values */
    if (is_request) {
        a = text(ps[0], pe[0] - ps[0]);
        if (a == NULL)
            goto error;
        if (two == TWO_NO_TARGET) {
            b = PyUnicode_FromStringAndSize("", 0);
            c = b == NULL ? NULL : text(ps[1] + 5, pe[1] - ps[1] - 5);
        }
        else {
            if (nparts > 1) {
                Py_ssize_t ulen = pe[1] - ps[1];
                b = text(ps[1], ulen > MAX_URI ? MAX_URI : ulen);
            }
            else
                b = Py_NewRef(Py_None);
            if (b == NULL)
                goto error;
            c = two == TWO_HTTP09 ? Py_NewRef(s_v09)
                : nparts > 2 ? text(ps[2] + 5, pe[2] - ps[2] - 5) : Py_NewRef(Py_None);
        }
        if (b == NULL || c == NULL)
            goto error;
    }
    else {
        a = PyLong_FromLong(status);
        if (a == NULL)
            goto error;
        b = flen > 13 ? text(buf + 13, flen - 13) : Py_NewRef(Py_None);
        if (b == NULL)
            goto error;
        c = text(buf + 5, 3);
        if (c == NULL)
            goto error;
    }
    len_obj = length >= 0 ? PyLong_FromLongLong(length) : Py_NewRef(Py_None);
    if (len_obj == NULL)
        goto error;
    res = PyTuple_New(7);
    if (res == NULL)
        goto error;
    PyTuple_SET_ITEM(res, 0, a);
    PyTuple_SET_ITEM(res, 1, b);
    PyTuple_SET_ITEM(res, 2, c);
    PyTuple_SET_ITEM(res, 3, len_obj);
    PyTuple_SET_ITEM(res, 4, Py_NewRef(chunked ? Py_True : Py_False));
    PyTuple_SET_ITEM(res, 5, tags);
    PyTuple_SET_ITEM(res, 6, fields);
    return res;

decline:
    Py_XDECREF(tags);
    Py_XDECREF(fields);
    return Py_NewRef(DECLINE);

error:
    Py_XDECREF(tags);
    Py_XDECREF(fields);
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(c);
    Py_XDECREF(len_obj);
    return NULL;
}

/* fh_api.scan_plain: parse_head's reading of a head that needs no tag, as spans. Not plain
 * (0): not a message, obsolete folding, a tag (malformed or HTTP/0.9 request line, lower-case
 * status line, bad or conflicting Content-Length), a chunked body, or more than
 * FH_MAX_FIELDS kept headers. */
static int
scan_plain(const char *head, Py_ssize_t n, int is_request, fh_plain *out)
{
    const unsigned char *buf = (const unsigned char *)head;
    start_line sl;
    if (!read_start_line(buf, n, is_request, &sl) || sl.malformed || sl.lower
        || sl.two != TWO_NONE)
        return 0;
    if (is_request) {
        if (sl.nparts != 3)
            return 0;
        Py_ssize_t ulen = sl.pe[1] - sl.ps[1];
        out->method = (fh_span){(const char *)sl.ps[0], sl.pe[0] - sl.ps[0]};
        out->uri = (fh_span){(const char *)sl.ps[1], ulen > MAX_URI ? MAX_URI : ulen};
        out->version = (fh_span){(const char *)sl.ps[2] + 5, sl.pe[2] - sl.ps[2] - 5};
    }
    else {
        out->status = sl.status;
        out->reason = sl.flen > 13 ? (fh_span){head + 13, sl.flen - 13} : (fh_span){NULL, 0};
        out->resp_version = (fh_span){head + 5, 3};
    }
    out->length = -1;
    out->nfields = 0;
    if (sl.nl == NULL)
        return 1;
    const unsigned char *p = sl.nl, *vs, *ve;
    int kind;
    while ((kind = next_header(&p, sl.end, &vs, &ve)) != H_NONE) {
        switch (kind) {
        case -1:
            return 0;
        case H_CL: {
            int64_t v = content_length(vs, ve);
            if (v < 0 || (out->length >= 0 && v != out->length))
                return 0;  /* bad_content_length, conflicting_content_length */
            out->length = v;
            continue;
        }
        case H_TE:
            if (has_chunked(vs, ve))
                return 0;
            continue;
        case H_CTYPE:
            break;
        case H_SETCOOKIE:
            if (is_request)
                continue;
            break;
        default:  /* the request headers */
            if (!is_request)
                continue;
            break;
        }
        if (out->nfields == FH_MAX_FIELDS)
            return 0;
        out->fields[out->nfields].kind = kind;
        out->fields[out->nfields].value = (fh_span){(const char *)vs, ve - vs};
        out->nfields++;
    }
    return 1;
}

static fh_api api = {scan_plain};

static PyMethodDef fh_methods[] = {
    {"parse_head", (PyCFunction)(void (*)(void))fh_parse_head, METH_FASTCALL,
     PyDoc_STR("parse_head(head, is_request) -> the result of "
               "stream_app.core.http.parse_head, or DECLINE (run the Python version)")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fh_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "stream_app._fasthttp",
    .m_doc = PyDoc_STR("C fast path of stream_app.core.http.parse_head (declines rare inputs)."),
    .m_size = -1,
    .m_methods = fh_methods,
};

static int
intern(PyObject **slot, const char *s)
{
    if (*slot == NULL)
        *slot = PyUnicode_InternFromString(s);
    return *slot == NULL ? -1 : 0;
}

PyMODINIT_FUNC
PyInit__fasthttp(void)
{
    for (int i = 0; i < 256; i++) {
        lc[i] = (unsigned char)((i >= 'A' && i <= 'Z') ? i + 32 : i);
        tok_rest[i] = (unsigned char)(is_alpha((unsigned char)i) || is_digit((unsigned char)i)
                                      || i == '_' || i == '-');
        split_ws[i] = (unsigned char)(i == ' ' || i == '\t' || i == '\n' || i == '\r'
                                      || i == 0x0b || i == 0x0c);
    }
    if (intern(&s_host, "host") < 0 || intern(&s_user_agent, "user_agent") < 0
        || intern(&s_referrer, "referrer") < 0 || intern(&s_req_ctype, "req_ctype") < 0
        || intern(&s_auth, "auth") < 0 || intern(&s_proxy_auth, "proxy_auth") < 0
        || intern(&s_cookie, "cookie") < 0 || intern(&s_resp_ctype, "resp_ctype") < 0
        || intern(&s_set_cookie, "set_cookie") < 0
        || intern(&s_malformed_request, "malformed_request") < 0
        || intern(&s_bad_cl, "bad_content_length") < 0
        || intern(&s_conflicting_cl, "conflicting_content_length") < 0
        || intern(&s_te_and_cl, "te_and_cl") < 0
        || intern(&s_http09, "http09") < 0
        || intern(&s_lowercase_status, "lowercase_status_line") < 0
        || intern(&s_v09, "0.9") < 0)
        return NULL;
    if (DECLINE == NULL) {
        DECLINE = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
        if (DECLINE == NULL)
            return NULL;
    }
    PyObject *m = PyModule_Create(&fh_module);
    if (m == NULL)
        return NULL;
    PyObject *capsule = PyCapsule_New(&api, FH_API_CAPSULE, NULL);
    int added = capsule == NULL ? -1 : PyModule_AddObjectRef(m, "_C_API_v1", capsule);
    Py_XDECREF(capsule);
    if (added < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "DECLINE", DECLINE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
