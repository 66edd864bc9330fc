/* agent._scrypt: the Python face of the C core. Arguments are checked here, with errors that
 * name what was wrong; hashing runs with the GIL released. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "scrypt_core.h"
#include "sha256.h"
#include "verify_queue.h"

#define MAX_SCAN_COUNT (1ULL << 32) /* the whole nonce space */
#define MAX_SCRYPT_MEM (1ULL << 32) /* bytes of V that general scrypt may allocate */

static const scrypt_backend *active;

static int backend_usable(const scrypt_backend *b) { return b->available(); }

static const scrypt_backend *find_backend(const char *name)
{
    size_t n;
    const scrypt_backend *all = scrypt_backends(&n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(all[i].name, name) == 0 && backend_usable(&all[i]))
            return &all[i];
    return NULL;
}

static PyObject *usable_names(void)
{
    size_t n;
    const scrypt_backend *all = scrypt_backends(&n);
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (!backend_usable(&all[i]))
            continue;
        PyObject *s = PyUnicode_FromString(all[i].name);
        if (s == NULL || PyList_Append(list, s) < 0) {
            Py_XDECREF(s);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(s);
    }
    return list;
}

/* Copies exactly n bytes out of any bytes-like object; -1 with an error naming `name` and what
 * was wrong: "<name> must be <size>, got <len>" or "<name> must be <kind>, not <type>". */
static int copy_exact(PyObject *obj, uint8_t *out, Py_ssize_t n, const char *name,
                      const char *size, const char *kind)
{
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be %s, not %.100s", name, kind,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    if (view.len != n) {
        PyErr_Format(PyExc_ValueError, "%s must be %s, got %zd", name, size, view.len);
        PyBuffer_Release(&view);
        return -1;
    }
    memcpy(out, view.buf, (size_t)n);
    PyBuffer_Release(&view);
    return 0;
}

/* An 80-byte header: every entry point that takes one uses this. */
static int copy_header(PyObject *obj, uint8_t hdr[80])
{
    return copy_exact(obj, hdr, 80, "header", "80 bytes", "a bytes-like object");
}

static PyObject *py_pow_hash(PyObject *self, PyObject *arg)
{
    (void)self;
    uint8_t hdr[80], out[32];
    if (copy_header(arg, hdr) < 0)
        return NULL;
    const scrypt_backend *be = active;
    int fail = 0;
    Py_BEGIN_ALLOW_THREADS
    uint32_t *V = thread_scratch((size_t)POW_N * 128);
    if (V == NULL)
        fail = 1;
    else
        pow_hash_with(be->romix_one, V, hdr, out);
    Py_END_ALLOW_THREADS
    if (fail)
        return PyErr_NoMemory();
    return PyBytes_FromStringAndSize((const char *)out, 32);
}

static PyObject *py_scrypt(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer pw, salt;
    unsigned long long n, r, p, dklen;
    if (!PyArg_ParseTuple(args, "y*y*KKKK:scrypt", &pw, &salt, &n, &r, &p, &dklen))
        return NULL;
    const char *err = NULL;
    if (n < 2 || (n & (n - 1)) != 0)
        err = "n must be a power of 2 greater than 1";
    else if (r < 1 || p < 1 || r * p >= (1ULL << 30))
        err = "r and p must be at least 1 with r * p < 2**30";
    else if (dklen < 1 || dklen > (1ULL << 20))
        err = "dklen must be in 1..2**20";
    else if (n > MAX_SCRYPT_MEM / (128 * r))
        err = "n * r * 128 bytes of scratch exceeds the 4 GiB limit";
    if (err != NULL) {
        PyBuffer_Release(&pw);
        PyBuffer_Release(&salt);
        PyErr_Format(PyExc_ValueError, "scrypt: %s (n=%llu, r=%llu, p=%llu, dklen=%llu)", err, n,
                     r, p, dklen);
        return NULL;
    }
    PyObject *res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)dklen);
    int rc = -1;
    if (res != NULL) {
        uint8_t *out = (uint8_t *)PyBytes_AS_STRING(res);
        Py_BEGIN_ALLOW_THREADS
        rc = scrypt_general(pw.buf, (size_t)pw.len, salt.buf, (size_t)salt.len, n, (uint32_t)r,
                            (uint32_t)p, out, (size_t)dklen);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&pw);
    PyBuffer_Release(&salt);
    if (res != NULL && rc != 0) {
        Py_DECREF(res);
        return PyErr_NoMemory();
    }
    return res;
}

static PyObject *py_scan(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *hobj;
    long long start, count;
    Py_buffer tv;
    if (!PyArg_ParseTuple(args, "OLLy*:scan", &hobj, &start, &count, &tv))
        return NULL;
    if (tv.len != 32) {
        PyErr_Format(PyExc_ValueError, "target must be 32 little-endian bytes, got %zd", tv.len);
        PyBuffer_Release(&tv);
        return NULL;
    }
    uint8_t target[32];
    memcpy(target, tv.buf, 32);
    PyBuffer_Release(&tv);
    if (start < 0 || start > 0xFFFFFFFFLL) {
        PyErr_Format(PyExc_ValueError, "start_nonce must be in 0..2**32-1, got %lld", start);
        return NULL;
    }
    if (count < 1 || (unsigned long long)count > MAX_SCAN_COUNT) {
        PyErr_Format(PyExc_ValueError, "count must be in 1..2**32, got %lld", count);
        return NULL;
    }
    uint8_t hdr[80];
    if (copy_header(hobj, hdr) < 0)
        return NULL;

    const scrypt_backend *be = active;
    hits found = {NULL, 0, 0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = scan_nonces(be, hdr, (uint32_t)start, (uint64_t)count, target, &found);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        free(found.items);
        return PyErr_NoMemory();
    }
    PyObject *list = PyList_New((Py_ssize_t)found.len);
    for (size_t i = 0; list != NULL && i < found.len; i++) {
        PyObject *t = Py_BuildValue("(ky#)", (unsigned long)found.items[i].nonce,
                                    (const char *)found.items[i].hash, (Py_ssize_t)32);
        if (t == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, t);
    }
    free(found.items);
    return list;
}

static PyObject *py_backends(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return usable_names();
}

static PyObject *py_backend(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyUnicode_FromString(active->name);
}

static PyObject *py_set_backend(PyObject *self, PyObject *arg)
{
    (void)self;
    const char *name = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    if (name == NULL) {
        PyErr_SetString(PyExc_TypeError, "backend name must be a str");
        return NULL;
    }
    const scrypt_backend *be = find_backend(name);
    if (be == NULL) {
        PyObject *names = usable_names();
        if (names != NULL) {
            PyErr_Format(PyExc_ValueError, "unknown or unavailable scrypt backend %R; this CPU has %R",
                         arg, names);
            Py_DECREF(names);
        }
        return NULL;
    }
    active = be;
    Py_RETURN_NONE;
}

static PyObject *py_lanes(PyObject *self, PyObject *arg)
{
    (void)self;
    const char *name = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    const scrypt_backend *be = name ? find_backend(name) : NULL;
    if (be == NULL) {
        PyErr_Format(PyExc_ValueError, "unknown or unavailable scrypt backend %R", arg);
        return NULL;
    }
    return PyLong_FromUnsignedLong(be->lanes);
}

static PyObject *py_sha256_impl(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyUnicode_FromString(sha256_impl());
}

static PyObject *py_set_sha256(PyObject *self, PyObject *arg)
{
    (void)self;
    const char *name = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    if (name == NULL || (strcmp(name, "portable") != 0 && strcmp(name, "best") != 0)) {
        PyErr_Format(PyExc_ValueError, "sha256 implementation must be 'portable' or 'best', not %R",
                     arg);
        return NULL;
    }
    sha256_dispatch(strcmp(name, "portable") == 0);
    Py_RETURN_NONE;
}

/* merkle_root(coinbase, branch): sha256d(coinbase) folded up the branch (n x 32 bytes, each
 * internal order, the coinbase leftmost) with sha256d: the merkle root of every work built at a
 * notify, on the event loop. In C with the core's SHA-256 (SHA-NI where the CPU has it), it is
 * a few microseconds instead of the hashlib object calls that made up most of building a work. */
static PyObject *py_merkle_root(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer cb, br;
    if (!PyArg_ParseTuple(args, "y*y*:merkle_root", &cb, &br))
        return NULL;
    if (br.len % 32 != 0) {
        PyErr_Format(PyExc_ValueError, "merkle branch must be a multiple of 32 bytes, got %zd",
                     br.len);
        PyBuffer_Release(&cb);
        PyBuffer_Release(&br);
        return NULL;
    }
    uint8_t t[32], pair[64];
    sha256(cb.buf, (size_t)cb.len, t);
    sha256(t, 32, pair);
    const uint8_t *b = br.buf;
    for (Py_ssize_t off = 0; off < br.len; off += 32) {
        memcpy(pair + 32, b + off, 32);
        sha256(pair, 64, t);
        sha256(t, 32, pair);
    }
    PyBuffer_Release(&cb);
    PyBuffer_Release(&br);
    return PyBytes_FromStringAndSize((const char *)pair, 32);
}

/* ---------------------------------------------------------------- Verifier */

typedef struct {
    PyObject_HEAD
    verify_queue *q;
} VerifierObject;

static int verifier_init(VerifierObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"threads", "lazy_s", NULL};
    int threads = 1;
    double lazy_s = 0.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|id:Verifier", kwlist, &threads, &lazy_s))
        return -1;
    if (threads < 1 || threads > (int)VQ_MAX_THREADS) {
        PyErr_Format(PyExc_ValueError, "threads must be in 1..%u, got %d", VQ_MAX_THREADS,
                     threads);
        return -1;
    }
    if (!(lazy_s >= 0.0 && lazy_s <= 60.0)) {
        PyObject *v = PyFloat_FromDouble(lazy_s);
        if (v != NULL)
            PyErr_Format(PyExc_ValueError, "lazy_s must be in 0..60 seconds, got %R", v);
        Py_XDECREF(v);
        return -1;
    }
    if (self->q != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Verifier already initialised");
        return -1;
    }
    self->q = vq_open((unsigned)threads, (int64_t)(lazy_s * 1e9));
    if (self->q == NULL) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static void verifier_shut(VerifierObject *self)
{
    verify_queue *q = self->q;
    self->q = NULL;
    if (q == NULL)
        return;
    Py_BEGIN_ALLOW_THREADS /* a thread may be finishing a hash */
    vq_close(q);
    Py_END_ALLOW_THREADS
}

static void verifier_dealloc(VerifierObject *self)
{
    verifier_shut(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int verifier_open(VerifierObject *self)
{
    if (self->q == NULL) {
        PyErr_SetString(PyExc_ValueError, "the verifier is closed");
        return 0;
    }
    return 1;
}

static PyObject *verifier_submit(VerifierObject *self, PyObject *args)
{
    PyObject *hobj, *tobj, *uobj = Py_None;
    if (!PyArg_ParseTuple(args, "OO|O:submit", &hobj, &tobj, &uobj) || !verifier_open(self))
        return NULL;
    uint8_t urgent[32];
    if (uobj != Py_None && copy_exact(uobj, urgent, 32, "urgent_target", "32 little-endian bytes",
                                      "32 little-endian bytes or None") < 0)
        return NULL;
    if (!PyLong_Check(tobj))
        return PyErr_Format(PyExc_TypeError, "tag must be an int, not %.100s",
                            Py_TYPE(tobj)->tp_name);
    unsigned long long tag = PyLong_AsUnsignedLongLong(tobj);
    if (tag == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Format(PyExc_OverflowError, "tag must be in 0..2**64-1, got %R", tobj);
        return NULL;
    }
    uint8_t hdr[80];
    if (copy_header(hobj, hdr) < 0)
        return NULL;
    if (vq_submit(self->q, (uint64_t)tag, hdr, active->romix_one,
                  uobj == Py_None ? NULL : urgent) < 0) {
        if (errno == ENOBUFS)
            return PyErr_Format(PyExc_OverflowError,
                                "verifier queue full: %u headers waiting to be hashed",
                                VQ_MAX_PENDING);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *verifier_take(VerifierObject *self, PyObject *noargs)
{
    (void)noargs;
    if (!verifier_open(self))
        return NULL;
    vq_result *res;
    size_t n = vq_take(self->q, &res);
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list != NULL && i < n; i++) {
        PyObject *item = Py_BuildValue("(Ky#)", (unsigned long long)res[i].tag,
                                       (const char *)res[i].hash, (Py_ssize_t)32);
        if (item == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    free(res);
    return list;
}

static PyObject *verifier_set_lazy(VerifierObject *self, PyObject *arg)
{
    double lazy_s = PyFloat_AsDouble(arg);
    if (lazy_s == -1.0 && PyErr_Occurred())
        return NULL;
    if (!(lazy_s >= 0.0 && lazy_s <= 60.0))
        return PyErr_Format(PyExc_ValueError, "lazy_s must be in 0..60 seconds, got %R", arg);
    if (!verifier_open(self))
        return NULL;
    vq_set_lazy(self->q, (int64_t)(lazy_s * 1e9));
    Py_RETURN_NONE;
}

static PyObject *verifier_fileno(VerifierObject *self, PyObject *noargs)
{
    (void)noargs;
    if (!verifier_open(self))
        return NULL;
    return PyLong_FromLong(vq_fd(self->q));
}

static PyObject *verifier_pending(VerifierObject *self, PyObject *noargs)
{
    (void)noargs;
    if (self->q == NULL)
        return PyLong_FromLong(0);
    return PyLong_FromSize_t(vq_pending(self->q));
}

static PyObject *verifier_close(VerifierObject *self, PyObject *noargs)
{
    (void)noargs;
    verifier_shut(self);
    Py_RETURN_NONE;
}

static PyObject *verifier_closed(VerifierObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->q == NULL);
}

static PyMethodDef verifier_methods[] = {
    {"submit", (PyCFunction)verifier_submit, METH_VARARGS,
     "submit(header80, tag, urgent_target=None): queue one header for pow_hash on the "
     "verifier's threads; a hash at or under urgent_target (32 little-endian bytes) is "
     "signalled at once even when the verifier is lazy"},
    {"set_lazy", (PyCFunction)verifier_set_lazy, METH_O,
     "set_lazy(seconds): how long a result that is not urgent may wait for take() before the "
     "fd turns readable (0: at once)"},
    {"take", (PyCFunction)verifier_take, METH_NOARGS,
     "take() -> [(tag, raw_hash)]: every finished hash, oldest first per thread; cheap when "
     "none waits"},
    {"fileno", (PyCFunction)verifier_fileno, METH_NOARGS,
     "fd that is readable while finished hashes wait for take()"},
    {"pending", (PyCFunction)verifier_pending, METH_NOARGS,
     "headers submitted and not yet taken"},
    {"close", (PyCFunction)verifier_close, METH_NOARGS,
     "stop the threads (queued headers are dropped); idempotent"},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef verifier_getset[] = {
    {"closed", (getter)verifier_closed, NULL, "True after close()", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject VerifierType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "agent._scrypt.Verifier",
    .tp_basicsize = sizeof(VerifierObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Verifier(threads=1, lazy_s=0.0): pow_hash on the core's own threads, no GIL "
              "taken by them; lazy_s > 0 lets results that are not urgent wait for take()",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)verifier_init,
    .tp_dealloc = (destructor)verifier_dealloc,
    .tp_methods = verifier_methods,
    .tp_getset = verifier_getset,
};

static PyMethodDef methods[] = {
    {"pow_hash", py_pow_hash, METH_O, "scrypt(N=1024,r=1,p=1,32) of an 80-byte header: raw bytes"},
    {"scrypt", py_scrypt, METH_VARARGS, "scrypt(password, salt, n, r, p, dklen) per RFC 7914"},
    {"scan", py_scan, METH_VARARGS,
     "scan(header80, start_nonce, count, target_le32) -> [(nonce, raw_hash)] meeting target"},
    {"merkle_root", py_merkle_root, METH_VARARGS,
     "merkle_root(coinbase, branch) -> sha256d(coinbase) folded up the 32-byte branch hashes"},
    {"backends", py_backends, METH_NOARGS, "usable backends, fastest first"},
    {"backend", py_backend, METH_NOARGS, "the backend in use"},
    {"set_backend", py_set_backend, METH_O, "select a backend by name"},
    {"lanes", py_lanes, METH_O, "hashes per kernel call of a backend"},
    {"sha256_impl", py_sha256_impl, METH_NOARGS, "the SHA-256 compress in use"},
    {"set_sha256", py_set_sha256, METH_O, "'portable' or 'best' SHA-256 compress"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_scrypt",
                                    "The C scrypt core of doge-agent.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__scrypt(void)
{
    sha256_dispatch(0);
    size_t n;
    const scrypt_backend *all = scrypt_backends(&n);
    for (size_t i = 0; i < n && active == NULL; i++)
        if (backend_usable(&all[i]))
            active = &all[i];
    PyObject *m = PyModule_Create(&moddef);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObject(m, "MAX_SCAN_COUNT", PyLong_FromUnsignedLongLong(MAX_SCAN_COUNT)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyType_Ready(&VerifierType) < 0 || PyModule_AddIntConstant(m, "VERIFIER_MAX_THREADS",
                                                                   VQ_MAX_THREADS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&VerifierType);
    if (PyModule_AddObject(m, "Verifier", (PyObject *)&VerifierType) < 0) {
        Py_DECREF(&VerifierType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
