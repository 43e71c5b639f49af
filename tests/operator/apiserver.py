"""A stand-in Kubernetes API server for the operator's tests (the endpoints sporelet-operator uses).

Real HTTP semantics for those endpoints, as kube-apiserver answers them:
- bearer tokens (401 with a Status otherwise);
- one resourceVersion counter for every write (etcd's revision), lists that
  carry it, limit/continue paging, label selectors (key, key=value, key!=value);
- watches streamed with chunked transfer encoding: ADDED/MODIFIED/DELETED
  from any resourceVersion still in the history, BOOKMARK events when asked,
  timeoutSeconds; a resourceVersion older than the compaction point answers
  an ERROR event with a 410 Status (or HTTP 410, as some paths do);
- create (409 AlreadyExists), update by PUT (409 Conflict on a stale
  resourceVersion), merge-patch of the /status subresource (status only;
  409 on a stale metadata.resourceVersion), delete with preconditions.uid
  (409) and graceful pod deletion (deletionTimestamp first, then gone, as
  the kubelet does), 404 for what is not there;
- Leases (coordination.k8s.io/v1) as plain objects with optimistic concurrency;
- the garbage collector: deleting an owner deletes the objects whose
  ownerReferences name its uid.
Tests drive it in-process: set pod phases and readiness (the kubelet's part),
compact the history, drop watches, inject an answer for the next matching request.
"""

import copy
import datetime
import http.server
import json
import re
import socketserver
import ssl
import threading
import time
import urllib.parse
import uuid

RESOURCES = {
    # path prefix pieces -> (group/version, kind, plural)
    ("api", "v1", "pods"): ("v1", "Pod"),
    ("apis", "sporelet.ai/v1alpha1", "sporelets"): ("sporelet.ai/v1alpha1", "Sporelet"),
    ("apis", "coordination.k8s.io/v1", "leases"): ("coordination.k8s.io/v1", "Lease"),
}


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_obj(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def parse_selector(sel):
    reqs = []
    for part in filter(None, (sel or "").split(",")):
        if "!=" in part:
            k, v = part.split("!=", 1)
            reqs.append((k.strip(), "!=", v.strip()))
        elif "==" in part or "=" in part:
            k, v = re.split("==?", part, maxsplit=1)
            reqs.append((k.strip(), "=", v.strip()))
        else:
            reqs.append((part.strip(), "exists", None))
    return reqs


def selector_matches(reqs, obj):
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for k, op, v in reqs:
        if op == "exists" and k not in labels:
            return False
        if op == "=" and labels.get(k) != v:
            return False
        if op == "!=" and labels.get(k) == v:
            return False
    return True


class Store:
    def __init__(self):
        self.lock = threading.Condition()
        self.rv = 100
        self.objs = {}       # (plural, ns, name) -> obj
        self.history = []    # (rv, plural, type, obj)
        self.compacted = 0   # watches from a resourceVersion below this get 410
        self.drops = 0       # bumped to end every open watch
        self.gone_as_http = False
        self.pod_grace_s = 0.3
        self.requests = []   # (method, path, token) of every request
        self.faults = []     # [{"method","path_re","status","reason","message","count"}]
        self.watches_opened = 0

    # -- writes (caller holds the lock) ------------------------------------
    def _bump(self, plural, etype, obj):
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.history.append((self.rv, plural, etype, copy.deepcopy(obj)))
        self.lock.notify_all()

    def put(self, plural, obj, etype):
        md = obj["metadata"]
        self.objs[(plural, md["namespace"], md["name"])] = obj
        self._bump(plural, etype, obj)

    def remove(self, plural, obj):
        md = obj["metadata"]
        self.objs.pop((plural, md["namespace"], md["name"]), None)
        self._bump(plural, "DELETED", obj)
        self._collect_garbage(md.get("uid"))

    def _collect_garbage(self, uid):
        """The garbage collector: dependents of a deleted owner go too (background)."""
        if not uid:
            return
        for key, o in list(self.objs.items()):
            refs = (o.get("metadata") or {}).get("ownerReferences") or []
            if any(r.get("uid") == uid for r in refs):
                self._delete_obj(key[0], o)

    def _delete_obj(self, plural, obj):
        if plural == "pods" and self.pod_grace_s > 0:
            if not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = now_rfc3339()
                obj["metadata"]["deletionGracePeriodSeconds"] = 30
                self._bump(plural, "MODIFIED", obj)
                threading.Timer(self.pod_grace_s, self._finish_delete, (plural, obj["metadata"]["namespace"],
                                                                        obj["metadata"]["name"],
                                                                        obj["metadata"]["uid"])).start()
        else:
            self.remove(plural, obj)

    def _finish_delete(self, plural, ns, name, uid):
        with self.lock:
            o = self.objs.get((plural, ns, name))
            if o and o["metadata"]["uid"] == uid:
                self.remove(plural, o)

    # -- what tests call ---------------------------------------------------
    def create(self, plural, obj):
        with self.lock:
            return self._create(plural, obj)

    def _create(self, plural, obj):
        md = obj.setdefault("metadata", {})
        md["uid"] = str(uuid.uuid4())
        md["creationTimestamp"] = now_rfc3339()
        if plural == "sporelets":
            md["generation"] = 1
        if plural == "pods":
            obj.setdefault("status", {"phase": "Pending", "conditions": [
                {"type": "Ready", "status": "False"}]})
        self.put(plural, obj, "ADDED")
        return copy.deepcopy(obj)

    def get(self, plural, ns, name):
        with self.lock:
            o = self.objs.get((plural, ns, name))
            return copy.deepcopy(o) if o else None

    def list(self, plural, ns=None):
        with self.lock:
            return [copy.deepcopy(o) for (p, n, _), o in sorted(self.objs.items())
                    if p == plural and (ns is None or n == ns)]

    def update_spec(self, ns, name, **spec):
        """kubectl edit of a Sporelet's spec: the generation moves."""
        with self.lock:
            o = self.objs[("sporelets", ns, name)]
            o["spec"].update(spec)
            o["metadata"]["generation"] += 1
            self._bump("sporelets", "MODIFIED", o)

    def delete(self, plural, ns, name):
        with self.lock:
            o = self.objs.get((plural, ns, name))
            if o:
                self._delete_obj(plural, o)

    def set_pod(self, ns, name, phase, ready):
        """The kubelet's part: phase and the Ready condition."""
        with self.lock:
            o = self.objs.get(("pods", ns, name))
            if not o:
                return False
            o["status"] = {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
            self._bump("pods", "MODIFIED", o)
            return True

    def compact_and_drop(self):
        """etcd moved on (an unrelated write), compacted there, and every open
        watch ended: watches that resume from an older resourceVersion get 410."""
        with self.lock:
            self.rv += 1
            self.compacted = self.rv
            self.history = []
            self.drops += 1
            self.lock.notify_all()

    def drop_watches(self):
        with self.lock:
            self.drops += 1
            self.lock.notify_all()

    def inject(self, method, path_re, status, reason, message, count=1):
        with self.lock:
            self.faults.append({"method": method, "path_re": path_re, "status": status, "reason": reason,
                                "message": message, "count": count})

    def writes_by(self, token, path_re=".*", methods=("POST", "PUT", "PATCH", "DELETE")):
        with self.lock:
            return [(m, p) for (m, p, t) in self.requests if t == token and m in methods and re.search(path_re, p)]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "stand-in-apiserver"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            super().log_message(fmt, *args)

    # -- plumbing ----------------------------------------------------------
    def _send_json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _status(self, code, reason, message):
        self._send_json(code, status_obj(code, reason, message))

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        return json.loads(raw) if raw else None

    def _route(self):
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
        parts = [p for p in u.path.split("/") if p]
        # /api/v1/... or /apis/<group>/<version>/...
        if parts[:2] == ["api", "v1"]:
            gv, rest = "v1", parts[2:]
            root = "api"
        elif len(parts) >= 3 and parts[0] == "apis":
            gv, rest = parts[1] + "/" + parts[2], parts[3:]
            root = "apis"
        else:
            return None
        ns = None
        if len(rest) >= 2 and rest[0] == "namespaces":
            ns, rest = rest[1], rest[2:]
        if not rest:
            return None
        plural, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
        if (root, gv, plural) not in RESOURCES or len(rest) > 3:
            return None
        return gv, plural, ns, name, sub, q

    def _auth(self, method):
        h = self.headers.get("Authorization") or ""
        token = h[7:] if h.startswith("Bearer ") else None
        st = self.server.store
        with st.lock:
            st.requests.append((method, self.path, token))
        if token not in self.server.tokens:
            self._status(401, "Unauthorized", "Unauthorized")
            return False
        return True

    def _fault(self, method):
        st = self.server.store
        with st.lock:
            for f in st.faults:
                if f["count"] > 0 and f["method"] == method and re.search(f["path_re"], self.path):
                    f["count"] -= 1
                    self._status(f["status"], f["reason"], f["message"])
                    return True
        return False

    def _handle(self, method):
        if not self._auth(method):
            return
        if self._fault(method):
            return
        r = self._route()
        if r is None:
            return self._status(404, "NotFound", "the server could not find the requested resource")
        gv, plural, ns, name, sub, q = r
        if method == "GET" and q.get("watch") in ("1", "true"):
            return self._watch(plural, ns, q)
        getattr(self, "_" + method.lower())(gv, plural, ns, name, sub, q)

    do_GET = lambda self: self._handle("GET")
    do_POST = lambda self: self._handle("POST")
    do_PUT = lambda self: self._handle("PUT")
    do_PATCH = lambda self: self._handle("PATCH")
    do_DELETE = lambda self: self._handle("DELETE")

    # -- verbs ---------------------------------------------------------------
    def _get(self, gv, plural, ns, name, sub, q):
        st = self.server.store
        if name:
            o = st.get(plural, ns, name)
            if not o:
                return self._status(404, "NotFound", '%s "%s" not found' % (plural, name))
            return self._send_json(200, o)
        reqs = parse_selector(q.get("labelSelector"))
        with st.lock:
            items = [copy.deepcopy(o) for (p, n, _), o in sorted(st.objs.items())
                     if p == plural and (ns is None or n == ns) and selector_matches(reqs, o)]
            rv = str(st.rv)
        start = 0
        cont = q.get("continue")
        if cont:
            start_s, crv = cont.split(":", 1)
            start, rv = int(start_s), crv
        limit = int(q.get("limit") or 0)
        md = {"resourceVersion": rv}
        if limit and start + limit < len(items):
            md["continue"] = "%d:%s" % (start + limit, rv)
            items = items[start:start + limit]
        else:
            items = items[start:]
        kind = RESOURCES[("api" if gv == "v1" else "apis", gv, plural)][1]
        self._send_json(200, {"kind": kind + "List", "apiVersion": gv, "metadata": md, "items": items})

    def _post(self, gv, plural, ns, name, sub, q):
        obj = self._body()
        if name or not ns or not isinstance(obj, dict):
            return self._status(405 if name else 400, "BadRequest", "bad create")
        md = obj.setdefault("metadata", {})
        if md.get("namespace", ns) != ns:
            return self._status(400, "BadRequest", "the namespace of the object does not match the request")
        md["namespace"] = ns
        if not md.get("name"):
            return self._status(422, "Invalid", "metadata.name: Required value")
        st = self.server.store
        with st.lock:
            if (plural, ns, md["name"]) in st.objs:
                return self._status(409, "AlreadyExists", '%s "%s" already exists' % (plural, md["name"]))
            for key in ("resourceVersion", "uid", "deletionTimestamp"):
                md.pop(key, None)
            out = st._create(plural, obj)
        self._send_json(201, out)

    def _put(self, gv, plural, ns, name, sub, q):
        obj = self._body()
        st = self.server.store
        with st.lock:
            cur = st.objs.get((plural, ns, name))
            if not cur:
                return self._status(404, "NotFound", '%s "%s" not found' % (plural, name))
            rv = ((obj or {}).get("metadata") or {}).get("resourceVersion")
            if rv != cur["metadata"]["resourceVersion"]:
                return self._status(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": the object has '
                                    'been modified; please apply your changes to the latest version and try again'
                                    % (plural, name))
            new = copy.deepcopy(cur)
            if sub == "status":
                new["status"] = obj.get("status")
            else:
                for k, v in obj.items():
                    if k not in ("metadata", "status"):
                        new[k] = v
                for k in ("labels", "annotations"):
                    if k in obj.get("metadata", {}):
                        new["metadata"][k] = obj["metadata"][k]
                if plural == "sporelets" and new.get("spec") != cur.get("spec"):
                    new["metadata"]["generation"] += 1
            st.put(plural, new, "MODIFIED")
            out = copy.deepcopy(new)
        self._send_json(200, out)

    def _patch(self, gv, plural, ns, name, sub, q):
        if self.headers.get("Content-Type") != "application/merge-patch+json":
            return self._status(415, "UnsupportedMediaType", "the body of the request was in an unknown format")
        patch = self._body()
        st = self.server.store
        with st.lock:
            cur = st.objs.get((plural, ns, name))
            if not cur:
                return self._status(404, "NotFound", '%s "%s" not found' % (plural, name))
            rv = ((patch or {}).get("metadata") or {}).get("resourceVersion")
            if rv is not None and rv != cur["metadata"]["resourceVersion"]:
                return self._status(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": the object has '
                                    'been modified; please apply your changes to the latest version and try again'
                                    % (plural, name))
            merged = merge_patch(cur, patch)
            new = copy.deepcopy(cur)
            if sub == "status":
                # The status subresource ignores everything but status.
                new["status"] = merged.get("status")
            else:
                new["spec"] = merged.get("spec")
                if plural == "sporelets" and new.get("spec") != cur.get("spec"):
                    new["metadata"]["generation"] += 1
            st.put(plural, new, "MODIFIED")
            out = copy.deepcopy(new)
        self._send_json(200, out)

    def _delete(self, gv, plural, ns, name, sub, q):
        opts = self._body() or {}
        st = self.server.store
        with st.lock:
            cur = st.objs.get((plural, ns, name))
            if not cur:
                return self._status(404, "NotFound", '%s "%s" not found' % (plural, name))
            pre = (opts.get("preconditions") or {})
            if pre.get("uid") and pre["uid"] != cur["metadata"]["uid"]:
                return self._status(409, "Conflict", "Precondition failed: UID in precondition: %s, UID in object "
                                    "meta: %s" % (pre["uid"], cur["metadata"]["uid"]))
            if pre.get("resourceVersion") and pre["resourceVersion"] != cur["metadata"]["resourceVersion"]:
                return self._status(409, "Conflict", "Precondition failed: resourceVersion")
            st._delete_obj(plural, cur)
            out = copy.deepcopy(cur)
        self._send_json(200, out)

    # -- watch ---------------------------------------------------------------
    def _chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _watch(self, plural, ns, q):
        st = self.server.store
        reqs = parse_selector(q.get("labelSelector"))
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        timeout = min(float(q.get("timeoutSeconds") or 1800), 1800)
        rv_s = q.get("resourceVersion") or "0"
        try:
            rv = int(rv_s)
        except ValueError:
            return self._status(400, "BadRequest", "invalid resourceVersion %r" % rv_s)
        with st.lock:
            st.watches_opened += 1
            too_old = rv != 0 and rv < st.compacted
            if too_old and st.gone_as_http:
                return self._status(410, "Expired", "too old resource version: %d (%d)" % (rv, st.compacted))
            drops = st.drops
            pending = []
            if rv == 0:
                # "any": the current state as ADDED events.
                pending = [("ADDED", copy.deepcopy(o)) for (p, n, _), o in sorted(st.objs.items())
                           if p == plural and (ns is None or n == ns)]
                rv = st.rv
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if too_old:
                ev = {"type": "ERROR", "object": status_obj(410, "Expired", "too old resource version: %d (%d)"
                                                             % (rv, st.compacted))}
                self._chunk(json.dumps(ev).encode() + b"\n")
                self.wfile.write(b"0\r\n\r\n")
                return
            end = time.monotonic() + timeout
            last_bookmark = time.monotonic()
            while True:
                for etype, o in pending:
                    if (ns is None or o["metadata"]["namespace"] == ns) and selector_matches(reqs, o):
                        self._chunk(json.dumps({"type": etype, "object": o}).encode() + b"\n")
                pending, bookmark = [], None
                with st.lock:
                    while True:
                        if st.drops != drops or time.monotonic() >= end:
                            break
                        new = [(et, o, erv) for (erv, p, et, o) in st.history if erv > rv and p == plural]
                        if new:
                            pending = [(et, o) for (et, o, _) in new]
                            rv = new[-1][2]
                            break
                        if bookmarks and time.monotonic() - last_bookmark >= self.server.bookmark_s:
                            # The newest revision: the client may resume there.
                            rv = max(rv, st.rv)
                            bookmark = {"type": "BOOKMARK", "object": {
                                "kind": RESOURCES_KIND[plural], "apiVersion": RESOURCES_GV[plural],
                                "metadata": {"resourceVersion": str(rv)}}}
                            break
                        st.lock.wait(0.1)
                    if not pending and not bookmark:
                        break  # dropped or timed out
                if bookmark:
                    self._chunk(json.dumps(bookmark).encode() + b"\n")
                    last_bookmark = time.monotonic()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass
        self.close_connection = True


RESOURCES_KIND = {p: k for (_, _, p), (_, k) in RESOURCES.items()}
RESOURCES_GV = {p: gv for (_, _, p), (gv, _) in RESOURCES.items()}


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class APIServer:
    """Runs on 127.0.0.1 on a free port; tls=(cert, key) serves HTTPS."""

    def __init__(self, tokens=("t0k3n",), tls=None, verbose=False, bookmark_s=1.0):
        self.store = Store()
        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.store = self.store
        self.httpd.tokens = set(tokens)
        self.httpd.verbose = verbose
        self.httpd.bookmark_s = bookmark_s
        self.scheme = "http"
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls[0], tls[1])
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.port = self.httpd.server_address[1]
        self.url = "%s://127.0.0.1:%d" % (self.scheme, self.port)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def tokens(self):
        return self.httpd.tokens

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.store.drop_watches()
        self.httpd.shutdown()
        self.httpd.server_close()
