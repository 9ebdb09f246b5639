/*
 * The C interface stream_app._fasthttp exports to stream_app._fastconn, as a capsule
 * (FH_API_CAPSULE): a head scanner that builds no Python object, for the heads that need no
 * tag. Included by both; the capsule's struct is versioned by its name.
 */
#ifndef MIRRORSCOPE_FASTHTTP_API_H
#define MIRRORSCOPE_FASTHTTP_API_H

#include <Python.h>
#include <stdint.h>

#define FH_API_CAPSULE "stream_app._fasthttp._C_API_v1"
#define FH_MAX_FIELDS 16

/* The wanted headers (stream_app.core.http._WANTED) */
enum {
    H_NONE = 0, H_CL, H_TE, H_HOST, H_UA, H_REFERER, H_CTYPE, H_AUTH, H_PAUTH, H_COOKIE,
    H_SETCOOKIE
};

typedef struct {
    const char *s;
    Py_ssize_t n;
} fh_span;

/* A plain head, as parse_head would return it with no tag and no chunked body: each text is
 * the span that parse_head decodes (UTF-8, backslashreplace). */
typedef struct {
    fh_span method, uri, version;   /* a request (the URI already cut to MAX_URI) */
    long status;                    /* a response */
    fh_span reason, resp_version;   /* reason.s NULL: none */
    int64_t length;                 /* Content-Length; -1: none */
    int nfields;
    struct {
        int kind;                   /* H_HOST .. H_SETCOOKIE, only those the message keeps */
        fh_span value;
    } fields[FH_MAX_FIELDS];
} fh_plain;

typedef struct {
    /* 1: a plain head, read into *out; 0: not plain (parse_head says what it is) */
    int (*scan_plain)(const char *head, Py_ssize_t n, int is_request, fh_plain *out);
} fh_api;

#endif
