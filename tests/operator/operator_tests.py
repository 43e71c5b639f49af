"""Integration tests of sporelet-operator against the stand-in API server (tests/operator/apiserver.py).

Usage: operator_tests.py <case> <path to sporelet-operator>
Each case starts its own API server on 127.0.0.1, writes a kubeconfig, runs
the real operator binary, drives the cluster side (the kubelet's pod
phases, kubectl's edits) and checks what the operator did through the API.
"""

import base64
import hashlib
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from apiserver import APIServer  # noqa: E402

NS = "demo"
DIGEST = "sha256:" + "ab" * 32


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


def wait_for(what, fn, timeout=20.0, interval=0.1):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise Fail("timed out waiting for %s (last: %r)" % (what, last))


class Operator:
    def __init__(self, binary, workdir, name, kubeconfig, args=()):
        self.log_path = os.path.join(workdir, name + ".log")
        self.log = open(self.log_path, "wb")
        cmd = [binary, "--kubeconfig", kubeconfig, "--http-addr", "127.0.0.1:0", "--watch-timeout", "30",
               "--log-level", "debug"] + list(args)
        env = dict(os.environ)
        env.pop("KUBECONFIG", None)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.name = name

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def http_addr(self):
        m = wait_for("%s's http address" % self.name,
                     lambda: re.search(r'serving /healthz /readyz /metrics" addr=(\S+)', self.text()), 10)
        return m.group(1)

    def get(self, path):
        host, port = self.http_addr().rsplit(":", 1)
        c = http.client.HTTPConnection(host, int(port), timeout=5)
        c.request("GET", path)
        r = c.getresponse()
        body = r.read().decode()
        c.close()
        return r.status, body

    def metric(self, name):
        _, body = self.get("/metrics")
        m = re.search(r"^%s (\d+)$" % re.escape(name), body, re.M)
        return int(m.group(1)) if m else None

    def alive(self):
        return self.p.poll() is None

    def stop(self, timeout=15):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
                raise Fail("%s did not stop within %ss of SIGTERM" % (self.name, timeout))
        self.log.close()
        return self.p.returncode


class Env:
    def __init__(self, binary, tokens=("t0k3n",), tls=None):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="sop-test-")
        self.api = APIServer(tokens=tokens, tls=tls).start()
        self.ops = []

    def kubeconfig(self, name="kubeconfig", token="t0k3n", token_file=None, ca_data=None, insecure=False):
        user = {"tokenFile": token_file} if token_file else {"token": token}
        cluster = {"server": self.api.url}
        if ca_data:
            cluster["certificate-authority-data"] = base64.b64encode(ca_data).decode()
        if insecure:
            cluster["insecure-skip-tls-verify"] = True
        # JSON is YAML: the operator reads it with libyaml.
        kc = {"apiVersion": "v1", "kind": "Config", "current-context": "test",
              "clusters": [{"name": "c", "cluster": cluster}],
              "users": [{"name": "u", "user": user}],
              "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u", "namespace": NS}}]}
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            json.dump(kc, f, indent=1)
        return path

    def operator(self, name="op", kubeconfig=None, args=()):
        op = Operator(self.binary, self.dir, name, kubeconfig or self.kubeconfig(), args)
        self.ops.append(op)
        return op

    def close(self, ok):
        for op in self.ops:
            if op.p.poll() is None:
                op.p.kill()
                op.p.wait()
        self.api.stop()
        if ok:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print("kept the logs in %s" % self.dir)

    # -- cluster side ----------------------------------------------------------
    def sporelet(self, name="app", replicas=3, spore="localhost:5000/spores/app@" + DIGEST, **spec):
        obj = {"apiVersion": "sporelet.ai/v1alpha1", "kind": "Sporelet",
               "metadata": {"name": name, "namespace": NS},
               "spec": dict({"spore": spore, "replicas": replicas}, **spec)}
        return self.api.store.create("sporelets", obj)

    def pods(self, name="app", live_only=True):
        out = {}
        for p in self.api.store.list("pods", NS):
            if p["metadata"].get("labels", {}).get("sporelet.ai/name") != name:
                continue
            if live_only and p["metadata"].get("deletionTimestamp"):
                continue
            out[p["metadata"]["name"]] = p
        return out

    def all_ready(self, name="app"):
        for p in self.pods(name).values():
            if p["status"]["phase"] != "Running" or p["status"]["conditions"][0]["status"] != "True":
                self.api.store.set_pod(NS, p["metadata"]["name"], "Running", True)

    def status(self, name="app"):
        o = self.api.store.get("sporelets", NS, name)
        return (o or {}).get("status") or {}

    def status_seen(self, ctype, reason, name="app"):
        with self.api.store.lock:
            for (_, plural, _, o) in self.api.store.history:
                if plural == "sporelets" and o["metadata"]["name"] == name:
                    for c in (o.get("status") or {}).get("conditions", []):
                        if c["type"] == ctype and c["reason"] == reason:
                            return True
        return False

    def condition(self, ctype, name="app"):
        for c in self.status(name).get("conditions", []):
            if c["type"] == ctype:
                return c
        return {}


def pod_names(n, name="app"):
    return sorted("%s-%d" % (name, i) for i in range(n))


# ---- cases ---------------------------------------------------------------------

def case_reconcile(env):
    """3 replicas with the right fields; Ready status; scale to 1; a failed pod replaced; delete collects pods."""
    op = env.operator()
    env.sporelet(replicas=3, command=["/app", "--serve"], env=[{"name": "MODE", "value": "x"}],
                 resources={"limits": {"memory": "128Mi"}},
                 fork={"hostnamePattern": "app-{index}", "env": [{"name": "SHARD", "values": ["a", "b"]},
                                                                 {"name": "REPLICA", "value": "{index}"}]},
                 template={"labels": {"team": "t"}, "annotations": {"a": "b"}, "nodeSelector": {"n": "1"},
                           "tolerations": [{"key": "k", "operator": "Exists"}],
                           "affinity": {"nodeAffinity": {}}})
    owner = env.api.store.get("sporelets", NS, "app")
    wait_for("3 pods", lambda: sorted(env.pods()) == pod_names(3))
    for i, (name, p) in enumerate(sorted(env.pods().items())):
        md, spec = p["metadata"], p["spec"]
        ref = md["ownerReferences"][0]
        check(ref["uid"] == owner["metadata"]["uid"] and ref["controller"] and ref["blockOwnerDeletion"]
              and ref["kind"] == "Sporelet", "owner reference of %s: %r" % (name, ref))
        check(spec["runtimeClassName"] == "sporelet", "runtimeClassName")
        c = spec["containers"][0]
        check(c["image"] == "localhost:5000/spores/app@" + DIGEST, "image %s" % c["image"])
        check(c["command"] == ["/app", "--serve"] and c["resources"]["limits"]["memory"] == "128Mi", "command/resources")
        env_map = {e["name"]: e["value"] for e in c["env"]}
        check(env_map == {"MODE": "x", "SHARD": "ab"[i % 2], "REPLICA": str(i)}, "env of %s: %r" % (name, env_map))
        check(spec["hostname"] == "app-%d" % i, "hostname")
        check(spec["nodeSelector"] == {"n": "1"} and spec["tolerations"][0]["key"] == "k"
              and "nodeAffinity" in spec["affinity"], "scheduling fields")
        check(md["labels"] == {"team": "t", "sporelet.ai/name": "app", "sporelet.ai/replica": str(i)},
              "labels %r" % md["labels"])
        a = md["annotations"]
        check(a["sporelet.ai/spore"] == c["image"] and a["sporelet.ai/replica"] == str(i)
              and a["sporelet.ai/generation"] == "1" and a["a"] == "b", "annotations %r" % a)

    wait_for("status replicas 3", lambda: env.status().get("replicas") == 3)
    check(env.condition("Ready").get("status") == "False", "Ready False before pods are ready")
    check(env.condition("Resolved").get("reason") == "Pinned", "Resolved Pinned")
    check(env.status().get("resolvedDigest") == DIGEST, "resolvedDigest")
    ready_false_at = env.condition("Ready")["lastTransitionTime"]
    resolved_at = env.condition("Resolved")["lastTransitionTime"]
    time.sleep(1.1)  # so a new transition would get a different second
    env.all_ready()
    wait_for("readyReplicas 3", lambda: env.status().get("readyReplicas") == 3)
    wait_for("Ready True", lambda: env.condition("Ready").get("status") == "True")
    check(env.condition("Ready")["lastTransitionTime"] != ready_false_at, "Ready's transition time moved")
    check(env.condition("Resolved")["lastTransitionTime"] == resolved_at, "Resolved's transition time kept")
    check(env.status().get("observedGeneration") == 1, "observedGeneration")

    # Scale down: the highest indexes go.
    env.api.store.update_spec(NS, "app", replicas=1)
    wait_for("1 pod", lambda: sorted(env.pods()) == ["app-0"])
    deletes = [p for m, p in env.api.store.writes_by("t0k3n", r"/pods/", ("DELETE",))]
    check(deletes[-2:] == ["/api/v1/namespaces/demo/pods/app-2", "/api/v1/namespaces/demo/pods/app-1"],
          "scale-down order: %r" % deletes)
    wait_for("status after scale-down", lambda: env.status().get("replicas") == 1
             and env.status().get("observedGeneration") == 2 and env.condition("Ready").get("status") == "True")

    # A failed pod is replaced (same name, new uid).
    old_uid = env.pods()["app-0"]["metadata"]["uid"]
    env.api.store.set_pod(NS, "app-0", "Failed", False)
    # Degraded lasts only until the failed pod is deleted: look for it in the object's history.
    wait_for("Degraded PodsFailed written", lambda: env.status_seen("Degraded", "PodsFailed"), 10)
    wait_for("app-0 replaced", lambda: "app-0" in env.pods() and env.pods()["app-0"]["metadata"]["uid"] != old_uid)
    env.all_ready()
    wait_for("Degraded False again", lambda: env.condition("Degraded").get("status") == "False")

    # Deleting the Sporelet: the garbage collector takes the pods; the operator does not recreate them.
    env.api.store.delete("sporelets", NS, "app")
    wait_for("pods collected", lambda: not env.pods(live_only=False))
    time.sleep(1)
    check(not env.pods(live_only=False), "no pod came back after the Sporelet was deleted")
    check(op.alive(), "operator alive")
    check(op.stop() == 0, "exit status 0 after SIGTERM")


def case_relist(env):
    """410 Gone, as an ERROR event and as HTTP 410: the operator lists again and keeps working."""
    op = env.operator()
    env.sporelet(replicas=1)
    wait_for("1 pod", lambda: sorted(env.pods()) == ["app-0"])
    lists0 = op.metric('sporelet_operator_lists_total{resource="pods"}') or 0
    for as_http in (False, True):
        env.api.store.gone_as_http = as_http
        env.api.store.compact_and_drop()
        wait_for("a relist after 410 (http=%s)" % as_http,
                 lambda: op.text().count("watch expired (410 Gone)") >= (2 if not as_http else 4), 15)
        env.api.store.update_spec(NS, "app", replicas=env.api.store.get("sporelets", NS, "app")["spec"]["replicas"] + 1)
        n = env.api.store.get("sporelets", NS, "app")["spec"]["replicas"]
        wait_for("%d pods after the relist" % n, lambda: sorted(env.pods()) == pod_names(n))
    lists1 = op.metric('sporelet_operator_lists_total{resource="pods"}')
    check(lists1 >= lists0 + 2, "lists_total counted the relists (%s -> %s)" % (lists0, lists1))
    restarts = op.metric('sporelet_operator_watch_restarts_total{resource="sporelets"}')
    check(restarts and restarts >= 2, "watch restarts counted")
    check(op.stop() == 0, "exit status 0")


def case_conflict(env):
    """A 409 on the status write: the operator reads the Sporelet again and writes again."""
    env.api.store.inject("PATCH", r"/sporelets/app/status$", 409, "Conflict",
                         'Operation cannot be fulfilled on sporelets.sporelet.ai "app": the object has been modified')
    op = env.operator()
    env.sporelet(replicas=2)
    wait_for("status written", lambda: env.status().get("observedGeneration") == 1)
    reqs = [(m, p) for (m, p, t) in env.api.store.requests if "/sporelets/app" in p]
    seq = [m for m, p in reqs]
    i = seq.index("PATCH")
    check(seq[i:i + 3] == ["PATCH", "GET", "PATCH"], "PATCH (409), GET, PATCH: %r" % seq)
    check("status conflict, reading the Sporelet again" in op.text(), "the conflict is logged")
    # At least the injected one: a later reconcile that raced the watch
    # event of the status write meets a real 409 (stale resourceVersion).
    n = op.metric("sporelet_operator_status_conflicts_total")
    check(n is not None and n >= 1, "conflicts counted (%r)" % n)
    # A real conflict: the object changes under the operator between its read and its write is covered
    # by the same path; a stale resourceVersion is refused by the server with the same answer.
    check(op.stop() == 0, "exit status 0")


def case_unauthorized(env):
    """A bad token: 401 logged, backoff (no hot loop), /readyz 503; the token accepted later: it recovers."""
    op = env.operator(kubeconfig=env.kubeconfig(token="wrong"))
    env.sporelet(replicas=1)
    wait_for("401 logged", lambda: "401" in op.text() and "Unauthorized" in op.text(), 10)
    time.sleep(3)
    check(op.alive(), "operator alive after 401s")
    n401 = sum(1 for (m, p, t) in env.api.store.requests if t == "wrong")
    check(n401 < 40, "backoff: %d requests in about 3 s" % n401)
    st, body = op.get("/readyz")
    check(st == 503, "readyz 503 while caches are not synced (%d %s)" % (st, body))
    check(op.get("/healthz")[0] == 200, "healthz 200")
    env.api.tokens.add("wrong")
    wait_for("pods after the token is accepted", lambda: sorted(env.pods()) == ["app-0"], 40)
    wait_for("readyz 200", lambda: op.get("/readyz")[0] == 200, 10)
    check((op.metric("sporelet_operator_api_unauthorized_total") or 0) >= 1, "401s counted")
    check(op.stop() == 0, "exit status 0")


def case_token_rotation(env):
    """tokenFile: the server rotates the token; the operator reads the file again on 401."""
    tok = os.path.join(env.dir, "token")
    with open(tok, "w") as f:
        f.write("t0k3n\n")
    op = env.operator(kubeconfig=env.kubeconfig(token_file=tok))
    env.sporelet(replicas=1)
    wait_for("1 pod", lambda: sorted(env.pods()) == ["app-0"])
    # Rotate: the file is replaced (rename, as the kubelet swaps projected tokens), the old token refused.
    with open(tok + ".new", "w") as f:
        f.write("rotated\n")
    os.rename(tok + ".new", tok)
    env.api.tokens.clear()
    env.api.tokens.add("rotated")
    env.api.store.update_spec(NS, "app", replicas=2)
    wait_for("2 pods with the rotated token", lambda: sorted(env.pods()) == pod_names(2), 30)
    check(env.api.store.writes_by("rotated", r"/pods$", ("POST",)), "pod created with the new token")
    check(op.stop() == 0, "exit status 0")


def lease(env):
    return env.api.store.get("leases", NS, "sporelet-operator") or {}


def case_leader(env):
    """Two operators with leader election: one reconciles; SIGTERM of it hands over to the other."""
    env.api.tokens.update({"tok-a", "tok-b"})
    args = ["--leader-elect", "--lease-duration", "6", "--renew-deadline", "4", "--retry-period", "1"]
    a = env.operator("a", env.kubeconfig("kc-a", token="tok-a"), args + ["--identity", "op-a"])
    wait_for("a leads", lambda: lease(env).get("spec", {}).get("holderIdentity") == "op-a", 15)
    b = env.operator("b", env.kubeconfig("kc-b", token="tok-b"), args + ["--identity", "op-b"])
    wait_for("b ready", lambda: b.get("/readyz")[0] == 200, 15)  # ready as a standby
    env.sporelet(replicas=2)
    wait_for("2 pods", lambda: sorted(env.pods()) == pod_names(2))
    time.sleep(2)
    check(not env.api.store.writes_by("tok-b", r"/pods|/sporelets/"), "the standby wrote nothing")
    check(a.metric("sporelet_operator_leader") == 1 and b.metric("sporelet_operator_leader") == 0, "leader gauges")

    check(a.stop() == 0, "leader exits 0 on SIGTERM")
    check("lease released" in a.text(), "the leader released the lease")
    t0 = time.monotonic()
    wait_for("b leads", lambda: lease(env).get("spec", {}).get("holderIdentity") == "op-b", 10)
    took = time.monotonic() - t0
    check(took < 5, "takeover after release took %.1fs (less than the lease duration)" % took)
    check(lease(env)["spec"]["leaseTransitions"] >= 1, "leaseTransitions counted")
    env.api.store.update_spec(NS, "app", replicas=3)
    wait_for("3 pods by b", lambda: sorted(env.pods()) == pod_names(3))
    check(env.api.store.writes_by("tok-b", r"/pods$", ("POST",)), "b created the pod")
    check(b.stop() == 0, "b exits 0")


def case_leader_expiry(env):
    """A leader that vanishes without releasing (SIGKILL): the other takes over after the lease expires."""
    env.api.tokens.update({"tok-a", "tok-b"})
    args = ["--leader-elect", "--lease-duration", "4", "--renew-deadline", "3", "--retry-period", "1"]
    a = env.operator("a", env.kubeconfig("kc-a", token="tok-a"), args + ["--identity", "op-a"])
    wait_for("a leads", lambda: lease(env).get("spec", {}).get("holderIdentity") == "op-a", 15)
    b = env.operator("b", env.kubeconfig("kc-b", token="tok-b"), args + ["--identity", "op-b"])
    time.sleep(2)
    a.p.kill()
    a.p.wait()
    t0 = time.monotonic()
    wait_for("b leads", lambda: lease(env).get("spec", {}).get("holderIdentity") == "op-b", 15)
    took = time.monotonic() - t0
    check(took >= 2.0, "b waited for the lease to expire (%.1fs)" % took)
    env.sporelet(replicas=1)
    wait_for("1 pod", lambda: sorted(env.pods()) == ["app-0"])
    check(b.stop() == 0, "b exits 0")


def case_http(env):
    """/healthz, /readyz and /metrics."""
    op = env.operator()
    env.sporelet(replicas=2)
    wait_for("2 pods", lambda: sorted(env.pods()) == pod_names(2))
    check(op.get("/healthz") == (200, "ok\n"), "healthz")
    wait_for("readyz", lambda: op.get("/readyz") == (200, "ok\n"))
    check(op.get("/nope")[0] == 404, "404 for other paths")
    st, body = op.get("/metrics")
    check(st == 200, "metrics 200")
    for name in ("sporelet_operator_reconciles_total", "sporelet_operator_reconcile_errors_total",
                 "sporelet_operator_queue_depth", "sporelet_operator_watch_restarts_total",
                 "sporelet_operator_leader", "sporelet_operator_pods_created_total"):
        check(re.search(r"^# TYPE %s (counter|gauge)$" % name, body, re.M), "metric %s" % name)
    check(op.metric("sporelet_operator_pods_created_total") == 2, "pods_created_total 2")
    check(op.metric("sporelet_operator_reconciles_total") >= 1, "reconciles counted")
    check(op.metric("sporelet_operator_leader") == 1, "leader 1 without election")
    check(op.stop() == 0, "exit status 0")


def make_tls(d):
    """A CA and a server certificate for 127.0.0.1, made with openssl."""
    def run(*a):
        subprocess.run(a, check=True, capture_output=True, cwd=d)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=stand-in CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr",
        "-subj", "/CN=127.0.0.1")
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "srv.crt", "-days", "2", "-extfile", "ext")
    return os.path.join(d, "srv.crt"), os.path.join(d, "srv.key"), open(os.path.join(d, "ca.crt"), "rb").read()


def case_tls(env_factory, binary):
    d = tempfile.mkdtemp(prefix="sop-tls-")
    try:
        if not shutil.which("openssl"):
            print("SKIP: openssl not found")
            return 77
        crt, key, ca = make_tls(d)
        env = env_factory(binary, tls=(crt, key))
        ok = False
        try:
            op = env.operator("good", env.kubeconfig("kc-good", ca_data=ca))
            env.sporelet(replicas=1)
            wait_for("1 pod over TLS", lambda: sorted(env.pods()) == ["app-0"])
            check(op.stop() == 0, "exit status 0")
            # The wrong CA: refused, logged, no crash.
            _, _, other_ca = make_tls(tempfile.mkdtemp(prefix="sop-tls2-", dir=d))
            bad = env.operator("bad", env.kubeconfig("kc-bad", ca_data=other_ca))
            wait_for("TLS failure logged", lambda: re.search(r"certificate|SSL", bad.text()), 15)
            check(bad.alive(), "alive after TLS failures")
            check(bad.stop() == 0, "exit status 0")
            ok = True
            print("PASS: tls")
        finally:
            env.close(ok)
        return 0
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---- tag resolution through a registry stand-in -------------------------------------

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                                  "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
                                  "size": 2},
                       "layers": []}).encode()


class Registry(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    manifests = {}

    def log_message(self, *a):
        pass

    def _answer(self, body):
        m = re.match(r"^/v2/(.+)/manifests/([^/]+)$", self.path)
        if self.path == "/v2/":
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = self.manifests.get((m.group(1), m.group(2))) if m else None
        if data is None:
            self.send_response(404)
            err = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(err)))
            self.end_headers()
            if body:
                self.wfile.write(err)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        self.send_header("Docker-Content-Digest", "sha256:" + hashlib.sha256(data).hexdigest())
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self):
        self._answer(False)

    def do_GET(self):
        self._answer(True)


def case_resolve(env):
    """A tag in spec.spore resolves to the registry's digest; pods are pinned; a missing tag is ResolveFailed."""
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Registry)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    reg = "127.0.0.1:%d" % srv.server_address[1]
    Registry.manifests[("spores/app", "v1")] = MANIFEST
    want = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
    try:
        op = env.operator(args=["--resolve-ttl", "1", "--resync", "2"])
        env.sporelet(replicas=2, spore=reg + "/spores/app:v1")
        wait_for("2 pods", lambda: sorted(env.pods()) == pod_names(2))
        for p in env.pods().values():
            check(p["spec"]["containers"][0]["image"] == "%s/spores/app@%s" % (reg, want), "pinned image")
        wait_for("resolvedDigest", lambda: env.status().get("resolvedDigest") == want)
        check(env.condition("Resolved").get("reason") == "Resolved", "Resolved condition")
        # The tag moves: the pods are replaced one at a time once all are Ready.
        Registry.manifests[("spores/app", "v1")] = MANIFEST + b" "
        want2 = "sha256:" + hashlib.sha256(MANIFEST + b" ").hexdigest()
        env.all_ready()
        end = time.monotonic() + 40
        while time.monotonic() < end:
            env.all_ready()
            imgs = {p["spec"]["containers"][0]["image"] for p in env.pods().values()}
            if imgs == {"%s/spores/app@%s" % (reg, want2)} and len(env.pods()) == 2:
                break
            time.sleep(0.3)
        else:
            raise Fail("the pods did not move to the new digest: %r" % imgs)
        env.sporelet(name="missing", replicas=1, spore=reg + "/spores/none:v9")
        wait_for("ResolveFailed", lambda: env.condition("Resolved", "missing").get("reason") == "ResolveFailed", 15)
        check(not env.pods("missing"), "no pod without a digest")
        check(env.condition("Degraded", "missing").get("status") == "True", "Degraded")
        check(op.stop() == 0, "exit status 0")
    finally:
        srv.shutdown()
        srv.server_close()


CASES = {
    "reconcile": case_reconcile,
    "relist": case_relist,
    "conflict": case_conflict,
    "unauthorized": case_unauthorized,
    "token_rotation": case_token_rotation,
    "leader": case_leader,
    "leader_expiry": case_leader_expiry,
    "http": case_http,
    "resolve": case_resolve,
}


def main():
    if len(sys.argv) != 3 or (sys.argv[1] not in CASES and sys.argv[1] != "tls"):
        print("usage: operator_tests.py {%s|tls} <sporelet-operator>" % "|".join(CASES), file=sys.stderr)
        return 2
    case, binary = sys.argv[1], sys.argv[2]
    if case == "tls":
        try:
            return case_tls(Env, binary)
        except Fail as e:
            print("FAIL: %s" % e)
            return 1
    env = Env(binary)
    ok = False
    try:
        CASES[case](env)
        ok = True
        print("PASS: %s" % case)
        return 0
    except Fail as e:
        print("FAIL: %s" % e)
        for op in env.ops:
            print("---- %s (last lines)" % op.name)
            print("\n".join(op.text().splitlines()[-40:]))
        return 1
    finally:
        env.close(ok)


if __name__ == "__main__":
    sys.exit(main())
