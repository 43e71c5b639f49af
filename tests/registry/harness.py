#!/usr/bin/env python3
"""Registry-tier test harness: a real docker-registry 2.8 on loopback, a
fault-injecting, request-counting (and optionally Bearer-enforcing) proxy in
front of it, an oras-compatible push/pull emulation, and spore builders.

Library use (tests/registry/registry_tests.py, bench_*.py):

    with Registry(auth="none") as reg, Proxy(reg) as px:
        px.add_fault("status", method="GET", path=r"/blobs/", count=2, status=503)
        ... run `spore pull <px.host>/spores/app:v1 ...`
        px.records(method="PUT", path=r"/blobs/uploads/")

Manual use (prints the URLs and waits for Ctrl-C):

    python3 harness.py serve --auth none|basic|bearer [--faults SPEC] [--token-lifetime S]

SPEC is ';'-separated faults, each ','-separated key=value pairs whose first
pair is the kind and its value, e.g.
    status=503,method=GET,path=/blobs/,count=2;truncate=1000,path=/blobs/;delay=0.5,method=PUT
(see Fault for the kinds and keys).
"""

import argparse
import base64
import hashlib
import http.client
import http.server
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
from datetime import datetime, timezone

CHUNK_SIZE = 2 << 20

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_EMPTY = "application/vnd.oci.empty.v1+json"
MT_SPORE_FILE = "application/vnd.sporelet.spore.file.v1"
SPORE_ARTIFACT_TYPE = "application/vnd.sporelet.spore.v1"
ANN_TITLE = "org.opencontainers.image.title"
ANN_CREATED = "org.opencontainers.image.created"
ANN_CHUNKS = "ai.sporelet.spore.chunks"
ANN_SPORE_MANIFEST = "ai.sporelet.spore.manifest"
ACCEPT_MANIFESTS = "%s, %s" % (MT_MANIFEST, MT_INDEX)
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
EMPTY_DESCRIPTOR = {"mediaType": MT_EMPTY, "digest": EMPTY_DIGEST, "size": 2, "data": "e30="}

REGISTRY_BIN = "/usr/bin/docker-registry"
HTPASSWD_BIN = "/usr/bin/htpasswd"
LOOPBACK = "127.0.0.1"


class HarnessError(Exception):
    pass


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return "sha256:" + h.hexdigest()


def free_port():
    """A port that was free a moment ago (callers retry if it is taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def tail(text, limit=4000):
    if len(text) > limit:
        return "...[%d bytes cut]...\n%s" % (len(text) - limit, text[-limit:])
    return text


def registry_tools_missing():
    """Why the registry peer cannot run here, or None."""
    if not os.access(REGISTRY_BIN, os.X_OK):
        return "%s is not installed (Debian package docker-registry)" % REGISTRY_BIN
    return None


# ---- the registry peer --------------------------------------------------------

class Registry:
    """docker-registry 2.8 serving a private config from a private temp dir.

    auth: "none" or "basic" (htpasswd with user/password). Bearer auth is the
    proxy's job (Proxy(auth="bearer")): 2.8 needs an external token server."""

    def __init__(self, auth="none", user="user", password="pass", parent_dir=None):
        if auth not in ("none", "basic"):
            raise ValueError("Registry auth must be none or basic (bearer lives in the proxy)")
        self.auth, self.user, self.password = auth, user, password
        self.parent_dir = parent_dir
        self.dir = None
        self.proc = None
        self.port = None

    @property
    def host(self):
        return "%s:%d" % (LOOPBACK, self.port)

    @property
    def url(self):
        return "http://" + self.host

    @property
    def log_path(self):
        return os.path.join(self.dir, "registry.log")

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    def _write_config(self, port):
        data = os.path.join(self.dir, "data")
        os.makedirs(data, exist_ok=True)
        # No policy section (repository classes would refuse artifact
        # configs), delete enabled, a fixed http.secret (upload _state HMAC),
        # no health checks, warnings only.
        cfg = ["version: 0.1",
               "log:",
               "  level: warn",
               "  formatter: text",
               "  accesslog:",
               "    disabled: true",
               "storage:",
               "  filesystem:",
               "    rootdirectory: %s" % data,
               "  delete:",
               "    enabled: true",
               "  maintenance:",
               "    uploadpurging:",
               "      enabled: false",
               "http:",
               "  addr: %s:%d" % (LOOPBACK, port),
               "  secret: %s" % secrets.token_hex(16),
               "  headers:",
               "    X-Content-Type-Options: [nosniff]"]
        if self.auth == "basic":
            htfile = os.path.join(self.dir, "htpasswd")
            if not os.access(HTPASSWD_BIN, os.X_OK):
                raise HarnessError("%s is not installed (Debian package apache2-utils)" % HTPASSWD_BIN)
            p = subprocess.run([HTPASSWD_BIN, "-Bbn", self.user, self.password], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=30)
            if p.returncode != 0:
                raise HarnessError("htpasswd failed: %s" % p.stderr.decode(errors="replace"))
            with open(htfile, "wb") as f:
                f.write(p.stdout)
            cfg += ["auth:", "  htpasswd:", "    realm: sporelet-test", "    path: %s" % htfile]
        path = os.path.join(self.dir, "config.yml")
        with open(path, "w") as f:
            f.write("\n".join(cfg) + "\n")
        return path

    def start(self, timeout=20):
        why = registry_tools_missing()
        if why:
            raise HarnessError(why)
        self.dir = tempfile.mkdtemp(prefix="spore-registry-", dir=self.parent_dir)
        last = ""
        for _attempt in range(3):  # the free port may be taken between probe and bind
            port = free_port()
            cfg = self._write_config(port)
            with open(self.log_path, "ab") as logf:
                self.proc = subprocess.Popen([REGISTRY_BIN, "serve", cfg], stdin=subprocess.DEVNULL,
                                             stdout=logf, stderr=logf, start_new_session=True)
            self.port = port
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    c = http.client.HTTPConnection(LOOPBACK, port, timeout=2)
                    c.request("GET", "/v2/")
                    st = c.getresponse().status
                    c.close()
                    if st in (200, 401):
                        return self
                except OSError:
                    pass
                time.sleep(0.05)
            last = self.log()
            self._kill()
            if "address already in use" not in last:
                break
        self.stop()
        raise HarnessError("docker-registry did not come up within %ds; its log:\n%s" % (timeout, tail(last)))

    def _kill(self):
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)

    def stop(self, keep=False):
        """Stops the registry (SIGTERM, then SIGKILL) and removes its temp
        dir unless keep."""
        self._kill()
        if self.dir and not keep:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ---- the proxy ----------------------------------------------------------------

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "trailers", "transfer-encoding", "upgrade", "expect", "proxy-connection"}


class Fault:
    """One injected fault, applied to the first `count` requests matching
    method (None: any) and the regexes path/query (re.search). count None:
    every matching request. Kinds:

      status    answer `status` (500/502/503/429...) without forwarding; a 429
                carries Retry-After: `retry_after` (default "0")
      delay     sleep `seconds`, then forward
      truncate  forward, send the headers and only `at` bytes of the body
                (None: half of it), then close the connection
      corrupt   forward, flip one byte of the body at `at` (None: the middle)
      throttle  forward, stream the body at `rate` bytes per second
      digest    forward, set Docker-Content-Digest to `value` (None: a wrong one)
      body      answer 200 with `value` (bytes) as the body, without asking
                the registry (a HEAD gets the headers only); Content-Type
                `content_type` (default the OCI manifest type);
                Docker-Content-Digest is its sha256 if `fix_digest`, absent if
                None, `digest_value` if False
    `delay` (seconds) may be given with any kind: slept before it applies."""

    KINDS = ("status", "delay", "truncate", "corrupt", "throttle", "digest", "body")

    def __init__(self, kind, method=None, path=None, query=None, count=None, status=503, retry_after="0",
                 seconds=0.0, at=None, rate=None, value=None, fix_digest=True, delay=0.0,
                 content_type=MT_MANIFEST, digest_value=None):
        if kind not in self.KINDS:
            raise ValueError("unknown fault kind %r" % kind)
        self.kind, self.method, self.count = kind, method, count
        self.path = re.compile(path) if path else None
        self.query = re.compile(query) if query else None
        self.status, self.retry_after = int(status), retry_after
        self.seconds, self.at, self.rate, self.value = float(seconds), at, rate, value
        self.fix_digest, self.delay, self.content_type = fix_digest, float(delay), content_type
        self.digest_value = digest_value
        self.hits = 0

    def matches(self, method, path, query):
        return ((self.method is None or self.method == method) and
                (self.path is None or self.path.search(path)) and
                (self.query is None or self.query.search(query)) and
                (self.count is None or self.hits < self.count))

    @property
    def remaining(self):
        return None if self.count is None else self.count - self.hits

    def __repr__(self):
        return "Fault(%s %s %s count=%s hits=%d)" % (self.kind, self.method or "*",
                                                    self.path.pattern if self.path else "*", self.count, self.hits)


class Record:
    """One request seen by the proxy. status stays None while it runs."""

    def __init__(self, method, path, query, headers):
        self.method, self.path, self.query = method, path, query
        self.headers = headers  # lower-case name -> value
        self.range = headers.get("range")
        self.status = None
        self.fault = None
        self.req_bytes = 0   # request body bytes received from the client
        self.resp_bytes = 0  # response body bytes sent to the client
        self.resp_headers = {}
        self.note = ""
        self.t0 = time.monotonic()
        self.t1 = None

    def param(self, name):
        v = urllib.parse.parse_qs(self.query, keep_blank_values=True).get(name)
        return v[0] if v else None

    def __repr__(self):
        return "%s %s%s%s -> %s%s%s" % (self.method, self.path, "?" + self.query if self.query else "",
                                        " [Range %s]" % self.range if self.range else "", self.status,
                                        " (fault %s)" % self.fault if self.fault else "",
                                        " %s" % self.note if self.note else "")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sporelet-test-proxy"
    sys_version = ""

    def log_message(self, fmt, *args):  # quiet: the proxy keeps its own log
        pass

    def _go(self):
        self.server.owner._handle(self)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _go


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64


NAME_RE = re.compile(r"^/v2/(.+?)/(manifests|blobs|tags|referrers)(/|$)")


class Proxy:
    """HTTP proxy on 127.0.0.1:<free port> in front of a registry: forwards
    every request (streaming both ways), records it, injects faults, and in
    auth="bearer" mode is the registry's Bearer gate and token server."""

    def __init__(self, upstream, auth="none", user="user", password="pass", token_lifetime=60.0,
                 expires_in=None, service="sporelet-test"):
        if isinstance(upstream, Registry):
            upstream = upstream.host
        h, _, p = upstream.rpartition(":")
        self.up_host, self.up_port = h, int(p)
        if auth not in ("none", "bearer"):
            raise ValueError("Proxy auth must be none or bearer")
        self.auth, self.user, self.password, self.service = auth, user, password, service
        self.token_lifetime = float(token_lifetime)
        self.expires_in = expires_in  # what the token reply says (None: the lifetime, at least 1)
        self.lock = threading.Lock()
        self.log = []
        self.faults = []
        self.tokens = {}  # token -> [expiry (monotonic), set of (repo, action)]
        self.token_log = []  # (time, scopes requested, token)
        self.auth_rejections = []  # (reason, method, path)
        self.body_bytes_sent = 0  # response body bytes of /blobs/ GETs, live
        self.server = None
        self.thread = None

    # -- lifecycle

    @property
    def port(self):
        return self.server.server_address[1]

    @property
    def host(self):
        return "%s:%d" % (LOOPBACK, self.port)

    @property
    def url(self):
        return "http://" + self.host

    def start(self):
        self.server = _Server((LOOPBACK, 0), _Handler)
        self.server.owner = self
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                       name="spore-test-proxy", daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(timeout=10)
            self.server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- faults and logs (thread-safe)

    def add_fault(self, kind, **kw):
        f = kind if isinstance(kind, Fault) else Fault(kind, **kw)
        with self.lock:
            self.faults.append(f)
        return f

    def clear_faults(self):
        with self.lock:
            self.faults = []

    def _take_fault(self, method, path, query):
        with self.lock:
            for f in self.faults:
                if f.matches(method, path, query):
                    f.hits += 1
                    return f
        return None

    def reset_log(self):
        with self.lock:
            self.log = []
            self.auth_rejections = []
            self.token_log = []
            self.body_bytes_sent = 0

    def wait_idle(self, timeout=10.0):
        """Waits (bounded) until every request seen so far has finished, so
        a client's view and the log agree. True if idle."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                busy = [r for r in self.log if r.t1 is None]
            if not busy:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)

    def records(self, method=None, path=None, query=None, status=None, wait=True):
        """Logged requests matching the filters (regexes for path and
        query); by default after waiting for in-flight ones to finish."""
        if wait:
            self.wait_idle()
        with self.lock:
            recs = list(self.log)
        return [r for r in recs if (method is None or r.method == method) and
                (path is None or re.search(path, r.path)) and
                (query is None or re.search(query, r.query)) and
                (status is None or r.status == status)]

    def uploads(self):
        """Blobs whose upload completed: (digest, record) of each PUT
        .../blobs/uploads/<id>?digest=<d> answered 201."""
        return [(r.param("digest"), r) for r in self.records(method="PUT", path=r"/blobs/uploads/", status=201)
                if r.param("digest")]

    def upload_bytes(self):
        """Request body bytes sent to upload endpoints (POST, PATCH, PUT)."""
        return sum(r.req_bytes for r in self.records(path=r"/blobs/uploads/"))

    def range_gets(self):
        return [r for r in self.records(method="GET", path=r"/blobs/sha256:") if r.range]

    def describe(self, last=60):
        with self.lock:
            recs = list(self.log)
            faults = list(self.faults)
        lines = ["proxy %s -> %s:%d, %d requests%s" % (self.url if self.server else "(stopped)", self.up_host,
                                                       self.up_port, len(recs),
                                                       ", last %d:" % last if len(recs) > last else ":")]
        lines += ["  %r" % r for r in recs[-last:]]
        if faults:
            lines.append("  faults: %s" % faults)
        if self.auth_rejections:
            lines.append("  bearer rejections: %s" % self.auth_rejections[-10:])
        return "\n".join(lines)

    # -- bearer tokens

    def set_token_lifetime(self, seconds, expires_in=None):
        with self.lock:
            self.token_lifetime = float(seconds)
            self.expires_in = expires_in

    def expire_tokens(self):
        """Every token issued so far is expired from now on."""
        with self.lock:
            for v in self.tokens.values():
                v[0] = 0.0

    def tokens_issued(self):
        with self.lock:
            return list(self.token_log)

    # -- request handling

    def _handle(self, h):
        u = urllib.parse.urlsplit(h.path)
        path, query = u.path, u.query
        hdrs = {k.lower(): v for k, v in h.headers.items()}
        rec = Record(h.command, path, query, hdrs)
        with self.lock:
            self.log.append(rec)
        try:
            self._serve(h, rec, path, query, hdrs)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout) as e:
            rec.note = "connection lost: %s" % e.__class__.__name__
            h.close_connection = True
        except Exception as e:  # never let a harness bug look like a registry answer
            rec.note = "proxy error: %r" % e
            h.close_connection = True
            try:
                self._reply(h, rec, 599, b"proxy error\n", {"Content-Type": "text/plain"})
            except OSError:
                pass
        finally:
            rec.t1 = time.monotonic()

    def _read_body(self, h, rec):
        """The request body as bytes if it was chunked; else None and the
        Content-Length still to be streamed."""
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = io.BytesIO()
            while True:
                line = h.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while h.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                out.write(h.rfile.read(size))
                h.rfile.readline(65537)
            data = out.getvalue()
            rec.req_bytes = len(data)
            return data, 0
        return None, int(h.headers.get("Content-Length") or 0)

    def _drain(self, h, rec, length):
        while length > 0:
            b = h.rfile.read(min(length, 1 << 20))
            if not b:
                raise ConnectionResetError("client went away mid-body")
            rec.req_bytes += len(b)
            length -= len(b)

    def _reply(self, h, rec, status, body, headers):
        rec.status = status  # before the client can see the answer
        h.send_response_only(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            rec.resp_bytes += len(body)
            h.wfile.write(body)

    def _error(self, h, rec, status, code, message, extra=None):
        body = json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode() + b"\n"
        hd = {"Content-Type": "application/json; charset=utf-8",
              "Docker-Distribution-Api-Version": "registry/2.0"}
        hd.update(extra or {})
        self._reply(h, rec, status, body, hd)

    def _serve(self, h, rec, path, query, hdrs):
        if self.auth == "bearer" and path == "/token":
            return self._token(h, rec, query)
        chunked_body, length = self._read_body(h, rec)
        if self.auth == "bearer" and path.startswith("/v2"):
            why = self._bearer_check(h, path, query, hdrs)
            if why:
                self._drain(h, rec, length)
                rec.note = "bearer: %s token" % why[0]
                return self._error(h, rec, 401, "UNAUTHORIZED", "authentication required",
                                   {"WWW-Authenticate": why[1]})
        fault = self._take_fault(h.command, path, query)
        if fault:
            rec.fault = fault.kind
            if fault.delay:
                time.sleep(fault.delay)
            if fault.kind == "delay":
                time.sleep(fault.seconds)
            elif fault.kind == "status":
                self._drain(h, rec, length)
                extra = {"Retry-After": str(fault.retry_after)} if fault.status == 429 else {}
                code = "TOOMANYREQUESTS" if fault.status == 429 else "UNAVAILABLE"
                return self._error(h, rec, fault.status, code, "injected fault", extra)
            elif fault.kind == "body":
                self._drain(h, rec, length)
                body = fault.value if isinstance(fault.value, bytes) else str(fault.value or "").encode()
                hd = {"Content-Type": fault.content_type, "Docker-Distribution-Api-Version": "registry/2.0"}
                if fault.fix_digest:
                    hd["Docker-Content-Digest"] = sha256_digest(body)
                elif fault.fix_digest is False and fault.digest_value:
                    hd["Docker-Content-Digest"] = fault.digest_value
                if h.command == "HEAD":
                    rec.status = 200
                    h.send_response_only(200)
                    for k, v in hd.items():
                        h.send_header(k, v)
                    h.send_header("Content-Length", str(len(body)))
                    h.end_headers()
                    return None
                return self._reply(h, rec, 200, body, hd)
        self._forward(h, rec, fault, chunked_body, length)

    def _forward(self, h, rec, fault, chunked_body, length):
        up = http.client.HTTPConnection(self.up_host, self.up_port, timeout=300)
        try:
            up.putrequest(h.command, h.path, skip_host=True, skip_accept_encoding=True)
            for k, v in h.headers.items():
                lk = k.lower()
                if lk in HOP_BY_HOP or lk == "content-length":
                    continue
                if lk == "authorization" and self.auth == "bearer":
                    continue  # the proxy is the gate; the registry has no auth
                up.putheader(k, v)
            if chunked_body is not None:
                up.putheader("Content-Length", str(len(chunked_body)))
            elif length or h.command in ("POST", "PUT", "PATCH"):
                up.putheader("Content-Length", str(length))
            up.endheaders()
            if chunked_body is not None:
                up.send(chunked_body)
            else:
                while length > 0:
                    b = h.rfile.read(min(length, 1 << 20))
                    if not b:
                        raise ConnectionResetError("client went away mid-body")
                    up.send(b)
                    rec.req_bytes += len(b)
                    length -= len(b)
            resp = up.getresponse()
            self._relay(h, rec, fault, resp)
        finally:
            up.close()

    def _rewrite_location(self, v):
        for host in ("%s:%d" % (self.up_host, self.up_port), "localhost:%d" % self.up_port):
            for scheme in ("http://", "https://"):
                if v.startswith(scheme + host):
                    return "http://" + self.host + v[len(scheme + host):]
        return v

    def _relay(self, h, rec, fault, resp):
        status = resp.status
        headers = []
        for k, v in resp.getheaders():
            lk = k.lower()
            if lk in HOP_BY_HOP:
                continue
            if lk == "location":
                v = self._rewrite_location(v)
            headers.append((k, v))
        has_body = h.command != "HEAD" and status not in (204, 304) and not 100 <= status < 200
        clen = resp.getheader("Content-Length")
        body = None
        if has_body and clen is None:
            body = resp.read()  # the registry sends lengths; this is for odd error pages
        kind = fault.kind if fault else None
        if kind == "digest":
            wrong = fault.value or sha256_digest(b"not the manifest %f" % time.time())
            headers = [(k, v) for k, v in headers if k.lower() != "docker-content-digest"]
            headers.append(("Docker-Content-Digest", wrong))
        if body is not None and has_body:
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(body))))
            total = len(body)
        else:
            total = int(clen) if clen is not None else 0
        rec.resp_headers = {k.lower(): v for k, v in headers}
        rec.status = status
        h.send_response_only(status)
        for k, v in headers:
            h.send_header(k, v)
        h.end_headers()
        if not has_body:
            return
        cut = None
        flip = None
        if kind == "truncate":
            cut = min(int(fault.at), total - 1) if fault.at is not None else total // 2
            cut = max(cut, 0)
        elif kind == "corrupt" and total > 0:
            flip = min(int(fault.at), total - 1) if fault.at is not None else total // 2
        rate = float(fault.rate) if kind == "throttle" else None
        is_blob_get = h.command == "GET" and "/blobs/sha256:" in rec.path
        src = io.BytesIO(body) if body is not None else resp
        sent = 0
        t0 = time.monotonic()
        piece = 16384 if rate else 65536
        while sent < total:
            n = min(piece, total - sent)
            if cut is not None:
                n = min(n, cut - sent)
                if n <= 0:
                    break
            b = src.read(n)
            if not b:
                rec.note = "upstream body ended early"
                h.close_connection = True
                break
            if flip is not None and sent <= flip < sent + len(b):
                ba = bytearray(b)
                ba[flip - sent] ^= 0x5A
                b = bytes(ba)
            sent += len(b)
            rec.resp_bytes += len(b)
            if is_blob_get:
                with self.lock:
                    self.body_bytes_sent += len(b)
            h.wfile.write(b)
            if rate:
                ahead = sent / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        if cut is not None:
            rec.note = "truncated at %d of %d" % (sent, total)
            h.close_connection = True
            try:
                h.wfile.flush()
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- bearer mode

    def _needed(self, method, path, query):
        """(repository, set of actions) a request needs, or (None, None) for
        /v2/ itself (any valid token)."""
        m = NAME_RE.match(path)
        if not m:
            return None, None, None
        name = m.group(1)
        acts = {"pull"} if method in ("GET", "HEAD") else {"pull", "push"}
        extra = None
        q = urllib.parse.parse_qs(query)
        if method == "POST" and "mount" in q and "from" in q:
            extra = q["from"][0]
        return name, acts, extra

    def _bearer_check(self, h, path, query, hdrs):
        """None if the request carries a valid token with the scope it
        needs, else (reason, WWW-Authenticate challenge)."""
        name, acts, mount_from = self._needed(h.command, path, query)
        tok = None
        a = hdrs.get("authorization", "")
        if a[:7].lower() == "bearer ":
            tok = a[7:].strip()
        reason = None
        now = time.monotonic()
        with self.lock:
            entry = self.tokens.get(tok) if tok else None
            if tok is None:
                reason = "missing"
            elif entry is None:
                reason = "unknown"
            elif entry[0] <= now:
                reason = "expired"
            elif name is not None:
                need = {(name, x) for x in acts}
                if mount_from:
                    need.add((mount_from, "pull"))
                if not need <= entry[1]:
                    reason = "scope"
            if reason:
                self.auth_rejections.append((reason, h.command, path))
        if not reason:
            return None
        chal = 'Bearer realm="http://%s/token",service="%s"' % (self.host, self.service)
        if name is not None:
            scope = "repository:%s:%s" % (name, ",".join(sorted(acts)))
            if mount_from:
                scope += " repository:%s:pull" % mount_from
            chal += ',scope="%s"' % scope
        if reason == "expired":
            chal += ',error="invalid_token"'
        elif reason == "scope":
            chal += ',error="insufficient_scope"'
        return reason, chal

    def _token(self, h, rec, query):
        length = int(h.headers.get("Content-Length") or 0)
        form = {}
        if h.command == "POST":
            raw = h.rfile.read(length) if length else b""
            rec.req_bytes = len(raw)
            form = urllib.parse.parse_qs(raw.decode(errors="replace"), keep_blank_values=True)
        elif length:
            self._drain(h, rec, length)
        q = urllib.parse.parse_qs(query, keep_blank_values=True)
        user = password = None
        a = h.headers.get("Authorization", "")
        if a[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(a[6:].strip(), validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user = None
        if h.command == "POST" and form.get("grant_type", [""])[0] == "password":
            user, password = form.get("username", [""])[0], form.get("password", [""])[0]
        if h.command not in ("GET", "POST"):
            return self._error(h, rec, 405, "UNSUPPORTED", "token endpoint: GET or POST")
        if user != self.user or password != self.password:
            return self._error(h, rec, 401, "UNAUTHORIZED", "token endpoint: bad or missing credentials",
                               {"WWW-Authenticate": 'Basic realm="sporelet-test token"'})
        scopes = []
        for v in q.get("scope", []) + form.get("scope", []):
            scopes += v.split()
        granted = set()
        for s in scopes:
            parts = s.split(":")
            if len(parts) >= 3 and parts[0] == "repository":
                name, acts = ":".join(parts[1:-1]), parts[-1].split(",")
                if "*" in acts:
                    acts = ["pull", "push", "delete"]
                granted |= {(name, x) for x in acts}
        tok = secrets.token_urlsafe(24)
        with self.lock:
            life = self.token_lifetime
            exp_in = self.expires_in if self.expires_in is not None else max(1, int(round(life)))
            self.tokens[tok] = [time.monotonic() + life, granted]
            self.token_log.append((time.monotonic(), scopes, q.get("service", form.get("service", [None]))[0], tok))
        body = json.dumps({"token": tok, "access_token": tok, "expires_in": exp_in,
                           "issued_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}).encode()
        self._reply(h, rec, 200, body, {"Content-Type": "application/json"})


# ---- an HTTP client for the registry (the harness's own pushes and checks) ---

def parse_challenge(value):
    """(scheme, {param: value}) of a WWW-Authenticate header."""
    scheme, _, rest = value.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest)}
    return scheme.lower(), params


class Client:
    """Minimal distribution client (http.client): Basic and Bearer auth,
    POST-then-PUT uploads, manifests with OCI Accept headers."""

    def __init__(self, base, user=None, password=None):
        u = urllib.parse.urlsplit(base if "://" in base else "http://" + base)
        self.host, self.port = u.hostname, u.port or 80
        self.user, self.password = user, password
        self.authz = None
        self.requests = 0

    def request(self, method, url, body=None, headers=None, _auth=True):
        u = urllib.parse.urlsplit(url)
        host, port = (u.hostname, u.port or 80) if u.scheme else (self.host, self.port)
        target = u.path + ("?" + u.query if u.query else "")
        hd = dict(headers or {})
        if self.authz and (host, port) == (self.host, self.port) and "Authorization" not in hd:
            hd["Authorization"] = self.authz
        if body is not None:
            hd.setdefault("Content-Length", str(len(body)))
        c = http.client.HTTPConnection(host, port, timeout=120)
        try:
            c.request(method, target, body=body, headers=hd)
            r = c.getresponse()
            data = r.read()
            self.requests += 1
        finally:
            c.close()
        if r.status == 401 and _auth and r.getheader("WWW-Authenticate"):
            if self._authenticate(r.getheader("WWW-Authenticate")):
                return self.request(method, url, body, headers, _auth=False)
        return r.status, r.headers, data

    def _authenticate(self, chal):
        scheme, p = parse_challenge(chal)
        if self.user is None:
            return False
        basic = "Basic " + base64.b64encode(("%s:%s" % (self.user, self.password)).encode()).decode()
        if scheme == "basic":
            self.authz = basic
            return True
        if scheme == "bearer" and p.get("realm"):
            q = [("service", p.get("service", ""))]
            q += [("scope", s) for s in p.get("scope", "").split() if s]
            st, _, data = self.request("GET", p["realm"] + "?" + urllib.parse.urlencode(q),
                                       headers={"Authorization": basic}, _auth=False)
            if st != 200:
                raise HarnessError("token endpoint %s answered %d: %r" % (p["realm"], st, data[:200]))
            j = json.loads(data)
            self.authz = "Bearer " + (j.get("token") or j.get("access_token"))
            return True
        return False

    def _check(self, what, st, hd, data, ok):
        if st not in ok:
            raise HarnessError("%s: HTTP %d %s" % (what, st, data[:400].decode(errors="replace")))

    def ping(self):
        st, _, data = self.request("GET", "/v2/")
        self._check("GET /v2/", st, None, data, (200,))

    def blob_exists(self, name, digest):
        st, _, _ = self.request("HEAD", "/v2/%s/blobs/%s" % (name, digest))
        return st == 200

    def push_blob(self, name, data, digest=None, check_exists=True):
        """Uploads data (bytes) as oras does: HEAD, then POST, then PUT
        <Location>[?&]digest=. Returns the digest."""
        digest = digest or sha256_digest(data)
        if check_exists and self.blob_exists(name, digest):
            return digest
        st, hd, body = self.request("POST", "/v2/%s/blobs/uploads/" % name, body=b"")
        self._check("POST upload %s" % name, st, hd, body, (202,))
        loc = hd.get("Location")
        if not loc:
            raise HarnessError("POST upload: no Location")
        url = loc + ("&" if "?" in loc else "?") + "digest=" + urllib.parse.quote(digest, safe=":")
        st, hd, body = self.request("PUT", url, body=data, headers={"Content-Type": "application/octet-stream"})
        self._check("PUT blob %s" % digest, st, hd, body, (201,))
        return digest

    def put_manifest(self, name, ref, body, media_type=MT_MANIFEST):
        st, hd, data = self.request("PUT", "/v2/%s/manifests/%s" % (name, ref), body=body,
                                    headers={"Content-Type": media_type})
        self._check("PUT manifest %s:%s" % (name, ref), st, hd, data, (201,))
        return hd.get("Docker-Content-Digest") or sha256_digest(body)

    def get_manifest(self, name, ref, accept=ACCEPT_MANIFESTS):
        """(body bytes, content type, digest = sha256 of the body)."""
        st, hd, data = self.request("GET", "/v2/%s/manifests/%s" % (name, ref), headers={"Accept": accept})
        self._check("GET manifest %s:%s" % (name, ref), st, hd, data, (200,))
        d = sha256_digest(data)
        sent = hd.get("Docker-Content-Digest")
        if sent and sent != d:
            raise HarnessError("manifest %s:%s: Docker-Content-Digest %s but the body is %s" % (name, ref, sent, d))
        if ref.startswith("sha256:") and ref != d:
            raise HarnessError("manifest %s@%s: body digest %s" % (name, ref, d))
        return data, hd.get("Content-Type"), d

    def get_blob(self, name, digest, rng=None, verify=True):
        hd = {"Range": "bytes=%d-%d" % rng} if rng else {}
        st, rh, data = self.request("GET", "/v2/%s/blobs/%s" % (name, digest), headers=hd)
        self._check("GET blob %s" % digest, st, rh, data, (206,) if rng else (200,))
        if verify and not rng and sha256_digest(data) != digest:
            raise HarnessError("blob %s: body hashes to %s" % (digest, sha256_digest(data)))
        return data


# ---- oras v1.3 emulation -------------------------------------------------------

def go_json(obj):
    """encoding/json.Marshal: compact, struct order as given (dicts keep
    insertion order), map keys sorted by the caller, HTML-safe escapes."""
    s = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") \
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


def rfc3339_now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def spore_dir_files(d):
    """Relative paths of a spore directory's files in the order a user would
    give them to oras: the manifest, the state files, then the chunks."""
    out = []
    for root, _dirs, files in os.walk(d):
        for f in files:
            out.append(os.path.relpath(os.path.join(root, f), d))

    def key(p):
        return (0 if p == "spore/manifest.json" else 1 if p.startswith("spore/") else 2, p)
    return sorted(out, key=key)


def oras_manifest(layers, created=None, artifact_type=SPORE_ARTIFACT_TYPE, annotations=None):
    """The image manifest `oras push` v1.3 (image-spec v1.1) writes, byte for
    byte: layers is a list of (media type, digest, size, title or None)."""
    descs = []
    for mt, dg, size, title in layers:
        d = {"mediaType": mt, "digest": dg, "size": size}
        if title is not None:
            d["annotations"] = {ANN_TITLE: title}
        descs.append(d)
    if not descs:
        descs = [dict(EMPTY_DESCRIPTOR)]
    ann = dict(annotations or {})
    ann.setdefault(ANN_CREATED, created or rfc3339_now())
    m = {"schemaVersion": 2, "mediaType": MT_MANIFEST, "artifactType": artifact_type,
         "config": dict(EMPTY_DESCRIPTOR), "layers": descs,
         "annotations": {k: ann[k] for k in sorted(ann)}}
    return go_json(m)


def oras_push(client, name, tag, spore_dir, files=None, layer_media_type=MT_LAYER_TAR, created=None,
              extra_layers=(), artifact_type=SPORE_ARTIFACT_TYPE):
    """Pushes a spore directory the way `oras push <ref> <files...>
    --artifact-type application/vnd.sporelet.spore.v1` does: every file a raw
    blob titled with its relative path, the empty config, the manifest last.
    extra_layers: more (media type, bytes, title or None) layers (for
    malformed images). Returns (manifest digest, manifest bytes)."""
    client.push_blob(name, b"{}", EMPTY_DIGEST)
    layers = []
    for rel in files if files is not None else spore_dir_files(spore_dir):
        with open(os.path.join(spore_dir, rel), "rb") as f:
            data = f.read()
        dg = client.push_blob(name, data)
        layers.append((layer_media_type, dg, len(data), rel))
    for mt, data, title in extra_layers:
        layers.append((mt, client.push_blob(name, data), len(data), title))
    body = oras_manifest(layers, created=created, artifact_type=artifact_type)
    dg = client.put_manifest(name, tag, body)
    if dg != sha256_digest(body):
        raise HarnessError("registry says manifest %s, we pushed %s" % (dg, sha256_digest(body)))
    return dg, body


def safe_title(title):
    """oras' path-traversal check: a relative path with no '..' component."""
    if not title or title.startswith("/") or "\\" in title:
        return False
    return ".." not in title.split("/")


def oras_pull(client, name, ref, out):
    """`oras pull <ref> -o out`: every titled layer to out/<title> (digest
    checked), untitled layers skipped, unsafe titles refused. Returns the
    titles written."""
    body, _ct, _dg = client.get_manifest(name, ref)
    m = json.loads(body)
    titles = []
    for layer in m.get("layers", []):
        title = (layer.get("annotations") or {}).get(ANN_TITLE)
        if not title:
            continue
        if not safe_title(title):
            raise HarnessError("oras pull: title %r is a path traversal" % title)
        if title in titles:
            raise HarnessError("oras pull: duplicate title %r" % title)
        data = client.get_blob(name, layer["digest"])
        if len(data) != layer["size"]:
            raise HarnessError("oras pull: %s is %d bytes, descriptor says %d" % (title, len(data), layer["size"]))
        dst = os.path.join(out, title)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "wb") as f:
            f.write(data)
        titles.append(title)
    return titles


# ---- tar layers and hand-made images -----------------------------------------

def build_tar(entries):
    """An uncompressed ustar archive, byte for byte under our control (no
    record padding): entries are dicts name, data (bytes), type ('0' file,
    '5' dir, '2' symlink, '1' hard link), linkname, mode."""
    out = io.BytesIO()
    for e in entries:
        ti = tarfile.TarInfo(e["name"])
        ti.type = {"0": tarfile.REGTYPE, "5": tarfile.DIRTYPE, "2": tarfile.SYMTYPE,
                   "1": tarfile.LNKTYPE}[e.get("type", "0")]
        data = e.get("data", b"") if ti.type == tarfile.REGTYPE else b""
        ti.size = len(data)
        ti.mode = e.get("mode", 0o444 if ti.type == tarfile.REGTYPE else 0o755)
        ti.mtime = 0
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        ti.linkname = e.get("linkname", "")
        out.write(ti.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict"))
        out.write(data)
        out.write(b"\0" * (-len(data) % 512))
    out.write(b"\0" * 1024)
    return out.getvalue()


def tar_entries(data):
    """[(name, type, data offset, size, bytes)] of an archive."""
    res = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as t:
        for ti in t.getmembers():
            body = t.extractfile(ti).read() if ti.isreg() else b""
            res.append((ti.name, ti.type.decode(), ti.offset_data, ti.size, body))
    return res


def parse_chunk_table(value):
    """ai.sporelet.spore.chunks "<hex>@<offset>,..." -> [(sha256:<hex>, offset)]."""
    res = []
    for item in value.split(","):
        hexd, _, off = item.partition("@")
        if not re.fullmatch(r"[0-9a-f]{64}", hexd) or not off.isdigit():
            raise HarnessError("bad chunk table item %r" % item)
        res.append(("sha256:" + hexd, int(off)))
    return res


def rebuild_image(client, name, src_ref, dst_tag, replace_layers=None, mutate=None):
    """Copies image src_ref to dst_tag with some layers' bytes replaced
    ({title: new bytes}): the new blobs and a config whose rootfs.diff_ids
    follow are uploaded; descriptors keep their annotations. mutate(manifest
    dict) may change anything else before the manifest is pushed (compact
    JSON, original key order). Returns (digest, manifest bytes)."""
    body, _ct, _dg = client.get_manifest(name, src_ref)
    m = json.loads(body)
    swap = {}
    for layer in m["layers"]:
        title = (layer.get("annotations") or {}).get(ANN_TITLE)
        if replace_layers and title in replace_layers:
            data = replace_layers[title]
            nd = client.push_blob(name, data)
            swap[layer["digest"]] = nd
            layer["digest"], layer["size"] = nd, len(data)
    if swap:  # the config names the layers (diff_ids): follow the swap
        cfg_raw = client.get_blob(name, m["config"]["digest"])
        try:
            cfg = json.loads(cfg_raw)
            ids = cfg.get("rootfs", {}).get("diff_ids")
            if isinstance(ids, list):
                cfg["rootfs"]["diff_ids"] = [swap.get(x, x) for x in ids]
                cfg_raw = json.dumps(cfg, separators=(",", ":")).encode()
        except (ValueError, AttributeError):
            pass
        m["config"]["digest"] = client.push_blob(name, cfg_raw)
        m["config"]["size"] = len(cfg_raw)
    if mutate:
        mutate(m)
    nb = json.dumps(m, separators=(",", ":")).encode()
    return client.put_manifest(name, dst_tag, nb, m.get("mediaType", MT_MANIFEST)), nb


# ---- spore builders ------------------------------------------------------------

class RunResult:
    def __init__(self, argv, rc, out, err, secs):
        self.argv, self.rc, self.out, self.err, self.secs = argv, rc, out, err, secs

    def __repr__(self):
        return "RunResult(rc=%r, %.2fs, argv=%r)" % (self.rc, self.secs, self.argv)

    def describe(self):
        return "%s\n  rc=%r after %.2fs\n  stdout: %s\n  stderr: %s" % (
            " ".join(self.argv), self.rc, self.secs, tail(self.out, 2000).strip(), tail(self.err, 2000).strip())


def run(argv, env=None, timeout=120, cwd=None, input=None):
    """Runs a command in its own process group with a hard timeout (the
    whole group is killed). Returns a RunResult (rc "timeout" on timeout).
    input, if given, is written to its stdin (else stdin is /dev/null)."""
    argv = [str(a) for a in argv]
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env, cwd=cwd, start_new_session=True, text=True, errors="replace")
    try:
        out, err = p.communicate(input=input, timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = p.communicate()
        rc = "timeout"
    return RunResult(argv, rc, out, err, time.monotonic() - t0)


def capture_spore(spore_bin, guest, dest, mem=64, args=("mode=bench", "warm_ms=50"), vcpus=1, env=None,
                  timeout=120):
    """spore run --kernel guest --mem M --capture dest --capture-on ready -- args."""
    r = run([spore_bin, "run", "--kernel", guest, "--vcpus", vcpus, "--mem", mem, "--capture", dest,
             "--capture-on", "ready", "--"] + list(args), env=env, timeout=timeout)
    if r.rc != 0 or not os.path.isfile(os.path.join(dest, "spore", "manifest.json")):
        raise HarnessError("capture of %s failed (exit %s):\n%s\n%s" % (dest, r.rc, tail(r.out), tail(r.err)))
    return dest


def fork_spore(spore_bin, src, count, out, env=None, timeout=120):
    """spore fork src --count N --out out; returns the child directories."""
    r = run([spore_bin, "fork", src, "--count", count, "--out", out], env=env, timeout=timeout)
    if r.rc != 0:
        raise HarnessError("spore fork failed (exit %s):\n%s" % (r.rc, tail(r.err)))
    kids = sorted(os.path.join(out, e) for e in os.listdir(out) if e.startswith("child-"))
    if len(kids) != count:
        raise HarnessError("spore fork made %d children, want %d" % (len(kids), count))
    return kids


def write_manifest(d, m):
    """spore/manifest.json as sl_json_dump writes it (sorted, indent 2, \\n)."""
    path = os.path.join(d, "spore", "manifest.json")
    data = (json.dumps(m, sort_keys=True, indent=2) + "\n").encode()
    if os.path.exists(path):
        os.unlink(path)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o444)
    return sha256_digest(data)


def read_manifest(d):
    with open(os.path.join(d, "spore", "manifest.json"), "rb") as f:
        return json.loads(f.read())


def write_random_chunk(d):
    data = os.urandom(CHUNK_SIZE)
    dg = sha256_digest(data)
    path = os.path.join(d, "chunks", "sha256", dg[7:])
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o444)
    return dg


def make_synthetic_spore(template, out, nchunks):
    """A spore with nchunks random (incompressible) chunks at slots
    0..nchunks-1: the template's spore/ files (a real capture of at least
    nchunks * 2 MiB), its manifest's memory.chunks rewritten. Nothing here
    runs a VM: push only needs a consistent directory."""
    m = read_manifest(template)
    if m["memory"]["size"] < nchunks * CHUNK_SIZE:
        raise HarnessError("template has %d bytes of memory, need %d chunks" % (m["memory"]["size"], nchunks))
    os.makedirs(os.path.join(out, "spore"))
    os.makedirs(os.path.join(out, "chunks", "sha256"))
    for f in os.listdir(os.path.join(template, "spore")):
        if f != "manifest.json":
            shutil.copy2(os.path.join(template, "spore", f), os.path.join(out, "spore", f))
    m["memory"]["chunks"] = [{"digest": write_random_chunk(out), "index": i} for i in range(nchunks)]
    return write_manifest(out, m)


def make_child_spore(parent, out, replace):
    """A child of parent: hard links to its files, `replace` chunks swapped
    for new random ones, manifest parent/generation updated. Returns the
    child's manifest digest."""
    m = read_manifest(parent)
    pdigest = file_digest(os.path.join(parent, "spore", "manifest.json"))
    for root, _dirs, files in os.walk(parent):
        rel = os.path.relpath(root, parent)
        os.makedirs(os.path.join(out, rel), exist_ok=True)
        for f in files:
            if rel == "spore" and f == "manifest.json":
                continue
            os.link(os.path.join(root, f), os.path.join(out, rel, f))
    chunks = m["memory"]["chunks"]
    step = max(1, len(chunks) // max(replace, 1))
    used = {c["digest"] for c in chunks}
    for k in range(replace):
        c = chunks[(k * step) % len(chunks)]
        c["digest"] = write_random_chunk(out)
    still = {c["digest"] for c in chunks}
    for dg in used - still:
        os.unlink(os.path.join(out, "chunks", "sha256", dg[7:]))
    m["parent"] = {"digest": pdigest}
    g = m["generation"]
    g["parent"], g["id"], g["depth"] = g["id"], secrets.token_hex(16), g["depth"] + 1
    return write_manifest(out, m)


# ---- manual use -----------------------------------------------------------------

def parse_fault_spec(spec):
    faults = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        pairs = [kv.split("=", 1) for kv in part.split(",")]
        kind, val = pairs[0][0], pairs[0][1] if len(pairs[0]) > 1 else None
        kw = {}
        for k, v in pairs[1:]:
            kw[k] = int(v) if k in ("count", "status", "at") else float(v) if k in ("seconds", "rate", "delay") else v
        if kind == "status":
            kw["status"] = int(val)
        elif kind == "delay":
            kw["seconds"] = float(val)
        elif kind in ("truncate", "corrupt") and val:
            kw["at"] = int(val)
        elif kind == "throttle":
            kw["rate"] = float(val)
        elif kind in ("digest", "body") and val:
            kw["value"] = val.encode() if kind == "body" else val
        faults.append(Fault(kind, **kw))
    return faults


def serve_main(argv):
    ap = argparse.ArgumentParser(prog="harness.py serve")
    ap.add_argument("--auth", choices=("none", "basic", "bearer"), default="none")
    ap.add_argument("--faults", default="")
    ap.add_argument("--token-lifetime", type=float, default=60.0)
    ap.add_argument("--user", default="user")
    ap.add_argument("--password", default="pass")
    a = ap.parse_args(argv)
    reg = Registry(auth="basic" if a.auth == "basic" else "none", user=a.user, password=a.password)
    reg.start()
    px = Proxy(reg, auth="bearer" if a.auth == "bearer" else "none", user=a.user, password=a.password,
               token_lifetime=a.token_lifetime)
    px.start()
    for f in parse_fault_spec(a.faults):
        px.add_fault(f)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("registry %s (auth %s, data %s)" % (reg.url, reg.auth, reg.dir))
    print("proxy    %s (auth %s, faults %s)" % (px.url, px.auth, px.faults or "none"))
    if a.auth != "none":
        auth = base64.b64encode(("%s:%s" % (a.user, a.password)).encode()).decode()
        host = px.host if a.auth == "bearer" else reg.host
        print("credentials %s:%s; DOCKER_CONFIG config.json: {\"auths\":{\"%s\":{\"auth\":\"%s\"}}}" %
              (a.user, a.password, host, auth))
    print("use e.g.  spore push DIR %s/spores/app:v1" % px.host, flush=True)
    try:
        while not stop.wait(1.0):
            if reg.proc is None or reg.proc.poll() is not None:
                print("registry exited:\n" + tail(reg.log()), file=sys.stderr)
                break
    finally:
        print(px.describe(last=40), flush=True)
        px.stop()
        reg.stop()
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "serve":
        sys.exit(serve_main(sys.argv[2:]))
    print(__doc__.strip(), file=sys.stderr)
    sys.exit(2)
