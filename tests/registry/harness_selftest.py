#!/usr/bin/env python3
"""Self-test of the registry-tier harness (harness.py) against the real
docker-registry: auth modes, the proxy's forwarding, logging and faults, the
Bearer flow (driven with curl, as an independent client), the oras push/pull
emulation and hand-made images. Needs no KVM and no spore binary.

usage: harness_selftest.py        exit 0 pass, 1 fail, 77 skip (no docker-registry)
"""

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

SKIP = 77
NAME = "spores/selftest"


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def curl(*args, timeout=60):
    p = subprocess.run(["curl", "-sS", "--max-time", "30"] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


def curl_status(*args):
    rc, out, err = curl("-o", "/dev/null", "-w", "%{http_code}", *args)
    return int(out or b"0"), rc, err


def fake_spore(d, nchunks=3):
    """A directory shaped like a spore (content is not a real VM)."""
    os.makedirs(os.path.join(d, "spore"))
    os.makedirs(os.path.join(d, "chunks", "sha256"))
    for f, size in (("vm.state", 4152), ("vcpu-0.state", 7008)):
        with open(os.path.join(d, "spore", f), "wb") as fh:
            fh.write(os.urandom(size))
    chunks = [{"index": i, "digest": H.write_random_chunk(d)} for i in range(nchunks)]
    with open(os.path.join(d, "spore", "manifest.json"), "w") as fh:
        json.dump({"memory": {"chunks": chunks}}, fh)


def same_tree(a, b):
    fa, fb = sorted(H.spore_dir_files(a)), sorted(H.spore_dir_files(b))
    check(fa == fb, "file sets differ: %s vs %s" % (fa, fb))
    for f in fa:
        check(open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read(), "%s differs" % f)


def t_registry_none(tmp):
    with H.Registry() as reg:
        c = H.Client(reg.url)
        c.ping()
        dg = c.push_blob(NAME, b"hello")
        check(c.blob_exists(NAME, dg), "pushed blob not found")
        check(c.get_blob(NAME, dg) == b"hello", "blob body differs")
        check(c.get_blob(NAME, dg, rng=(1, 3)) == b"ell", "Range GET wrong")
        # 2.8: no OCI Accept -> 404 for an OCI manifest.
        body = H.oras_manifest([(H.MT_LAYER_TAR, dg, 5, "hello.txt")], created="2026-01-01T00:00:00Z")
        c.push_blob(NAME, b"{}", H.EMPTY_DIGEST)
        mdg = c.put_manifest(NAME, "v1", body)
        check(mdg == H.sha256_digest(body), "manifest digest %s" % mdg)
        st, _, _ = c.request("GET", "/v2/%s/manifests/v1" % NAME)
        check(st == 404, "GET manifest without Accept: %d (2.8 answers 404)" % st)
        got, ct, gdg = c.get_manifest(NAME, "v1")
        check(got == body and ct == H.MT_MANIFEST and gdg == mdg, "manifest round trip")
        pid, d = reg.proc.pid, reg.dir
    check(not os.path.exists(d), "registry temp dir left behind")
    check(not os.path.exists("/proc/%d" % pid) or open("/proc/%d/stat" % pid).read().split()[2] == "Z",
          "registry still running after stop")
    print("  registry (no auth): start, blobs, Range, manifests, Accept quirk, stop: ok")


def t_registry_basic(tmp):
    with H.Registry(auth="basic", user="alice", password="s3cret") as reg:
        st, _, _ = curl_status(reg.url + "/v2/")
        check(st == 401, "anonymous /v2/ on htpasswd registry: %d" % st)
        rc, out, err = curl("-D", "-", "-o", "/dev/null", reg.url + "/v2/")
        check(b'Basic realm="sporelet-test"' in out, "no Basic challenge: %r" % out)
        st, _, _ = curl_status("-u", "alice:wrong", reg.url + "/v2/")
        check(st == 401, "wrong password: %d" % st)
        st, _, _ = curl_status("-u", "alice:s3cret", reg.url + "/v2/")
        check(st == 200, "right password: %d" % st)
        c = H.Client(reg.url, "alice", "s3cret")
        dg = c.push_blob(NAME, b"x" * 1000)
        check(c.get_blob(NAME, dg) == b"x" * 1000, "basic-auth blob")
        check(H.Client(reg.url).request("HEAD", "/v2/%s/blobs/%s" % (NAME, dg))[0] == 401, "anonymous HEAD")
    print("  registry (htpasswd): 401 challenge, wrong/right password, client Basic flow: ok")


def t_proxy_forwarding(tmp):
    with H.Registry() as reg, H.Proxy(reg) as px:
        c = H.Client(px.url)
        data = os.urandom(3 << 20)
        dg = c.push_blob(NAME, data)
        ups = px.uploads()
        check([u[0] for u in ups] == [dg], "uploads seen: %s" % ups)
        check(px.upload_bytes() == len(data), "upload bytes %d" % px.upload_bytes())
        post = px.records(method="POST", path=r"/blobs/uploads/$")
        check(len(post) == 1 and post[0].status == 202, "POST record %s" % post)
        loc = post[0].resp_headers.get("location", "")
        check(loc.startswith(px.url + "/v2/"), "Location not through the proxy: %r" % loc)
        # curl: Range GET through the proxy, chunked request bodies, HEAD.
        rc, out, err = curl("-H", "Range: bytes=1048576-1048675", px.url + "/v2/%s/blobs/%s" % (NAME, dg))
        check(rc == 0 and out == data[1048576:1048676], "Range GET via proxy (%d %s)" % (rc, err))
        rg = px.range_gets()
        check(len(rg) == 1 and rg[0].range == "bytes=1048576-1048675" and rg[0].status == 206, "range log %s" % rg)
        rc, out, err = curl("-I", px.url + "/v2/%s/blobs/%s" % (NAME, dg))
        check(b"Content-Length: %d" % len(data) in out, "HEAD through proxy: %r" % out)
        # A chunked-encoded upload (curl with Transfer-Encoding: chunked).
        blob2 = os.urandom(200000)
        d2 = H.sha256_digest(blob2)
        rc, hdrs, err = curl("-D", "-", "-o", "/dev/null", "-X", "POST", px.url + "/v2/%s/blobs/uploads/" % NAME)
        loc = [ln.split(b": ", 1)[1].strip().decode() for ln in hdrs.split(b"\r\n") if ln.lower().startswith(b"location:")][0]
        f = os.path.join(tmp, "b2")
        open(f, "wb").write(blob2)
        st, rc, err = curl_status("-X", "PUT", "-H", "Transfer-Encoding: chunked", "-H",
                                  "Content-Type: application/octet-stream", "--data-binary", "@" + f,
                                  loc + "&digest=" + d2)
        check(st == 201, "chunked PUT via proxy: %d %s" % (st, err))
        check(c.get_blob(NAME, d2) == blob2, "chunked upload content")
        # Parallel requests (the proxy is threaded).
        procs = [subprocess.Popen(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                                   px.url + "/v2/%s/blobs/%s" % (NAME, dg)], stdout=subprocess.PIPE)
                 for _ in range(8)]
        codes = [p.communicate()[0] for p in procs]
        check(codes == [b"200"] * 8, "parallel GETs: %s" % codes)
        check(px.body_bytes_sent >= 8 * len(data), "body_bytes_sent %d" % px.body_bytes_sent)
    print("  proxy: streaming both ways, Location rewrite, Range, HEAD, chunked bodies, 8 parallel GETs: ok")


def t_faults(tmp):
    with H.Registry() as reg, H.Proxy(reg) as px:
        c = H.Client(px.url)
        data = os.urandom(1 << 20)
        dg = c.push_blob(NAME, data)
        url = px.url + "/v2/%s/blobs/%s" % (NAME, dg)
        for status in (500, 502, 503, 429):
            f = px.add_fault("status", method="GET", path=r"/blobs/sha256:", count=2, status=status)
            rc, hdr, _ = curl("-D", "-", "-o", "/dev/null", url)
            check(hdr.startswith(b"HTTP/1.1 %d" % status), "first GET: %r" % hdr[:40])
            if status == 429:
                check(b"Retry-After: 0" in hdr, "429 without Retry-After: 0: %r" % hdr)
            check(curl_status(url)[0] == status, "second GET not faulted")
            check(curl_status(url)[0] == 200, "third GET still faulted")
            check(f.remaining == 0, "fault hits %d" % f.hits)
            px.clear_faults()
        # A faulted PUT with a body: drained, the session still usable.
        px.add_fault("status", method="PUT", path=r"/blobs/uploads/", count=1, status=500)
        blob = os.urandom(300000)
        st, hd, _ = c.request("POST", "/v2/%s/blobs/uploads/" % NAME, body=b"")
        u = hd["Location"] + "&digest=" + H.sha256_digest(blob)
        st1 = c.request("PUT", u, body=blob)[0]
        st2 = c.request("PUT", u, body=blob)[0]
        check((st1, st2) == (500, 201), "PUT after injected 500: %s %s" % (st1, st2))
        px.clear_faults()
        # Truncation: curl sees a short body (exit 18, partial file).
        px.add_fault("truncate", method="GET", path=r"/blobs/", count=1, at=1000)
        rc, out, err = curl(url)
        check(rc == 18 and len(out) == 1000, "truncate: curl rc %d, %d bytes" % (rc, len(out)))
        rc, out, err = curl(url)
        check(rc == 0 and out == data, "after truncate fault: rc %d" % rc)
        # Corruption: one byte differs.
        px.add_fault("corrupt", method="GET", path=r"/blobs/", count=1)
        rc, out, _ = curl(url)
        diff = [i for i in range(len(data)) if out[i] != data[i]] if len(out) == len(data) else None
        check(rc == 0 and diff == [len(data) // 2], "corrupt: diff at %s" % diff)
        check(curl(url)[1] == data, "after corrupt fault")
        # Range + corrupt: the flip is inside the ranged body.
        px.add_fault("corrupt", method="GET", path=r"/blobs/", count=1, at=10)
        rc, out, _ = curl("-H", "Range: bytes=100-199", url)
        check(len(out) == 100 and out != data[100:200] and out[11:] == data[111:200], "ranged corrupt")
        # Delay and throttle.
        px.add_fault("delay", method="HEAD", count=1, seconds=0.6)
        t0 = time.monotonic()
        curl("-I", url)
        check(time.monotonic() - t0 >= 0.55, "delay fault")
        px.add_fault("throttle", method="GET", path=r"/blobs/", count=1, rate=1 << 20)
        t0 = time.monotonic()
        rc, out, _ = curl(url)
        dt = time.monotonic() - t0
        check(out == data and 0.8 < dt < 5, "throttle 1 MiB at 1 MiB/s took %.2fs" % dt)
        # Manifest digest rewrite and body substitution.
        c.push_blob(NAME, b"{}", H.EMPTY_DIGEST)
        body = H.oras_manifest([(H.MT_LAYER_TAR, dg, len(data), "d")])
        mdg = c.put_manifest(NAME, "v1", body)
        px.add_fault("digest", method="GET", path=r"/manifests/", count=1)
        rc, hdr, _ = curl("-D", "-", "-o", "/dev/null", "-H", "Accept: " + H.MT_MANIFEST,
                          px.url + "/v2/%s/manifests/v1" % NAME)
        check(b"Docker-Content-Digest: sha256:" in hdr and b"Docker-Content-Digest: " + mdg.encode() not in hdr,
              "digest rewrite: %r" % hdr)
        px.add_fault("body", method="GET", path=r"/manifests/", count=1, value=b'{"broken":')
        rc, out, _ = curl("-D", os.path.join(tmp, "h"), "-H", "Accept: " + H.MT_MANIFEST,
                          px.url + "/v2/%s/manifests/%s" % (NAME, mdg))
        hdr = open(os.path.join(tmp, "h"), "rb").read()
        check(out == b'{"broken":' and H.sha256_digest(out).encode() in hdr and b"Content-Length: 10" in hdr,
              "body substitution: %r %r" % (out, hdr))
        px.add_fault("body", method="GET", path=r"/manifests/", count=1, value=b"{}", fix_digest=None)
        curl("-D", os.path.join(tmp, "h"), "-o", "/dev/null", "-H", "Accept: " + H.MT_MANIFEST,
             px.url + "/v2/%s/manifests/v1" % NAME)
        check(b"Docker-Content-Digest" not in open(os.path.join(tmp, "h"), "rb").read(), "digest header kept")
        # HEAD on a faulted path: the body's headers, no body; unknown digests too.
        px.add_fault("body", path=r"/manifests/", count=2, value=b'{"x":1}')
        rc, hdr, _ = curl("-I", px.url + "/v2/%s/manifests/v1" % NAME)
        check(hdr.startswith(b"HTTP/1.1 200") and b"Content-Length: 7" in hdr and
              H.sha256_digest(b'{"x":1}').encode() in hdr, "HEAD body fault: %r" % hdr)
        rc, out, _ = curl(px.url + "/v2/%s/manifests/%s" % (NAME, H.sha256_digest(b'{"x":1}')))
        check(out == b'{"x":1}', "body fault by unknown digest: %r" % out)
        faulted = [r for r in px.records() if r.fault]
        check(len(faulted) == 19, "faulted requests logged: %d\n%s" % (len(faulted), px.describe()))
        # The spec parser of `harness.py serve --faults`.
        fs = H.parse_fault_spec("status=503,method=GET,path=/blobs/,count=2;truncate=1000,path=/blobs/;"
                                "delay=0.5,method=PUT;throttle=1048576;corrupt;digest")
        check([f.kind for f in fs] == ["status", "truncate", "delay", "throttle", "corrupt", "digest"] and
              fs[0].status == 503 and fs[0].count == 2 and fs[1].at == 1000 and fs[2].seconds == 0.5,
              "fault spec parse: %s" % fs)
    print("  faults: 500/502/503/429 first-N, drained PUT, truncate, corrupt (whole and ranged), delay, "
          "throttle, digest rewrite, body substitution, spec parser: ok")


def t_bearer(tmp):
    with H.Registry() as reg, H.Proxy(reg, auth="bearer", user="bob", password="pw") as px:
        base = px.url + "/v2/"
        rc, hdr, _ = curl("-D", "-", "-o", "/dev/null", px.url + "/v2/%s/manifests/v1" % NAME)
        check(hdr.startswith(b"HTTP/1.1 401"), "anonymous: %r" % hdr[:40])
        want = ('WWW-Authenticate: Bearer realm="%s/token",service="sporelet-test",'
                'scope="repository:%s:pull"' % (px.url, NAME)).encode()
        check(want in hdr, "challenge %r" % hdr)
        rc, hdr, _ = curl("-D", "-", "-o", "/dev/null", "-X", "POST", px.url + "/v2/%s/blobs/uploads/" % NAME)
        check(b'scope="repository:%s:pull,push"' % NAME.encode() in hdr, "push challenge %r" % hdr)
        # The token endpoint wants Basic credentials.
        tok_url = px.url + "/token?service=sporelet-test&scope=repository:%s:pull,push" % NAME
        check(curl_status(tok_url)[0] == 401, "token without credentials")
        check(curl_status("-u", "bob:nope", tok_url)[0] == 401, "token with a wrong password")
        rc, out, _ = curl("-u", "bob:pw", tok_url)
        j = json.loads(out)
        check(j["token"] and j["access_token"] == j["token"] and j["expires_in"] == 60, "token reply %s" % j)
        auth = "Authorization: Bearer " + j["token"]
        check(curl_status("-H", auth, base)[0] == 200, "/v2/ with token")
        check(curl_status("-H", "Authorization: Bearer forged", base)[0] == 401, "forged token")
        # Scope: a pull-only token cannot push.
        rc, out, _ = curl("-u", "bob:pw", px.url + "/token?service=sporelet-test&scope=repository:%s:pull" % NAME)
        pull_only = "Authorization: Bearer " + json.loads(out)["token"]
        check(curl_status("-H", pull_only, "-X", "POST", px.url + "/v2/%s/blobs/uploads/" % NAME)[0] == 401,
              "pull-only token pushed")
        check(curl_status("-H", auth, "-X", "POST", px.url + "/v2/%s/blobs/uploads/" % NAME)[0] == 202,
              "push token refused")
        # Another repository is not in the token's scope.
        check(curl_status("-H", auth, px.url + "/v2/other/tags/list")[0] == 401, "scope of another repo")
        # Expiry: lifetime 1 s; and expire-now.
        px.set_token_lifetime(1.0)
        rc, out, _ = curl("-u", "bob:pw", tok_url)
        j = json.loads(out)
        check(j["expires_in"] == 1, "expires_in %s" % j["expires_in"])
        short = "Authorization: Bearer " + j["token"]
        check(curl_status("-H", short, base)[0] == 200, "fresh short token")
        time.sleep(1.1)
        rc, hdr, _ = curl("-D", "-", "-o", "/dev/null", "-H", short, base)
        check(hdr.startswith(b"HTTP/1.1 401") and b'error="invalid_token"' in hdr, "expired token: %r" % hdr)
        px.set_token_lifetime(60)
        rc, out, _ = curl("-u", "bob:pw", "-X", "POST", "--data",
                          "grant_type=password&username=bob&password=pw&service=sporelet-test&scope=repository:x:pull",
                          px.url + "/token")
        t2 = "Authorization: Bearer " + json.loads(out)["token"]
        check(curl_status("-H", t2, base)[0] == 200, "OAuth2 POST token")
        px.expire_tokens()
        check(curl_status("-H", t2, base)[0] == 401, "expire_tokens() did not expire")
        reasons = [r[0] for r in px.auth_rejections]
        check({"missing", "unknown", "scope", "expired"} <= set(reasons), "rejection reasons %s" % reasons)
        # The harness client follows the Bearer flow itself (oras emulation).
        c = H.Client(px.url, "bob", "pw")
        d = os.path.join(tmp, "bearer-spore")
        fake_spore(d)
        mdg, _ = H.oras_push(c, NAME, "v1", d)
        px.expire_tokens()
        out = os.path.join(tmp, "bearer-out")
        H.oras_pull(c, NAME, mdg, out)
        same_tree(d, out)
        check(len(px.tokens_issued()) >= 4, "tokens issued: %d" % len(px.tokens_issued()))
        try:
            H.Client(px.url, "bob", "wrong").ping()
            raise Fail("wrong password pinged")
        except H.HarnessError as e:
            check("401" in str(e), "wrong password: %s" % e)
    print("  bearer: challenges with scope, token endpoint (Basic, OAuth2 POST), scopes, expiry (1 s, "
          "expire-now, invalid_token), forged tokens, oras emulation through Bearer: ok")


def t_oras(tmp):
    with H.Registry() as reg, H.Proxy(reg) as px:
        c = H.Client(px.url)
        d = os.path.join(tmp, "spore")
        fake_spore(d, nchunks=4)
        mdg, body = H.oras_push(c, NAME, "v1", d, created="2026-11-22T08:00:00Z")
        m = json.loads(body)
        # Byte layout of oras v1.3's manifest: compact, key order, empty config.
        check(body.startswith(b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
                              b'"artifactType":"application/vnd.sporelet.spore.v1","config":{"mediaType":'
                              b'"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7'
                              b'e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"data":"e30="},"layers":[{'
                              b'"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:'),
              "manifest prefix %r" % body[:400])
        check(body.endswith(b'],"annotations":{"org.opencontainers.image.created":"2026-11-22T08:00:00Z"}}'),
              "manifest suffix %r" % body[-120:])
        check(b" " not in body, "oras manifests are compact")
        titles = [x["annotations"][H.ANN_TITLE] for x in m["layers"]]
        check(titles[0] == "spore/manifest.json" and len(titles) == 7, "titles %s" % titles)
        check(hashlib.sha256(b"{}").hexdigest() == H.EMPTY_DIGEST[7:], "empty digest")
        # Every blob went up by POST then PUT (plus the existence HEAD).
        ups = px.uploads()
        check(len(ups) == 8 and len(px.records(method="POST", path=r"/blobs/uploads/$")) == 8,
              "uploads %d" % len(ups))
        out = os.path.join(tmp, "out")
        got = H.oras_pull(c, NAME, "v1", out)
        check(sorted(got) == sorted(titles), "pulled titles %s" % got)
        same_tree(d, out)
        # A second push of the same files uploads nothing (HEAD says present).
        px.reset_log()
        H.oras_push(c, NAME, "v1b", d)
        check(px.uploads() == [], "re-push uploaded %s" % px.uploads())
        # Untitled layers are skipped; traversal titles refused.
        mdg2, _ = H.oras_push(c, NAME, "v2", d, files=["spore/manifest.json"],
                               extra_layers=[(H.MT_LAYER_TAR, b"anon", None)])
        out2 = os.path.join(tmp, "out2")
        check(H.oras_pull(c, NAME, "v2", out2) == ["spore/manifest.json"], "untitled layer not skipped")
        for bad in ("../evil", "/abs/evil", "spore/../../evil"):
            H.oras_push(c, NAME, "bad", d, files=[], extra_layers=[(H.MT_LAYER_TAR, b"evil", bad)])
            try:
                H.oras_pull(c, NAME, "bad", os.path.join(tmp, "out3"))
                raise Fail("oras pull accepted title %r" % bad)
            except H.HarnessError as e:
                check("traversal" in str(e), str(e))
        check(not os.path.exists(os.path.join(tmp, "evil")), "traversal wrote a file")
    print("  oras emulation: byte layout, POST+PUT per blob, skip on re-push, pull, untitled skip, "
          "traversal refusal: ok")


def t_tar_and_rebuild(tmp):
    files = [{"name": "spore/manifest.json", "data": b"{}\n"}, {"name": "spore/vm.state", "data": b"v" * 700}]
    t = H.build_tar(files)
    ents = H.tar_entries(t)
    check([(e[0], e[1], e[2], e[3]) for e in ents] == [("spore/manifest.json", "0", 512, 3),
                                                        ("spore/vm.state", "0", 1536, 700)], "entries %s" % ents)
    check(len(t) == 1536 + 1024 + 1024, "no record padding: %d" % len(t))
    rc = subprocess.run(["tar", "-tvf", "-"], input=t, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    check(rc.returncode == 0 and b"spore/vm.state" in rc.stdout, "GNU tar cannot read our tar")
    evil = H.build_tar(files + [{"name": "spore/link", "type": "2", "linkname": "/etc/passwd"},
                                {"name": "../escape", "data": b"x"}])
    ents = H.tar_entries(evil)
    check([e[0] for e in ents] == ["spore/manifest.json", "spore/vm.state", "spore/link", "../escape"] and
          ents[2][1] == "2", "evil entries %s" % ents)
    check(H.parse_chunk_table("%s@512,%s@2098176" % ("a" * 64, "b" * 64)) ==
          [("sha256:" + "a" * 64, 512), ("sha256:" + "b" * 64, 2098176)], "chunk table parse")
    with H.Registry() as reg:
        c = H.Client(reg.url)
        # A tar-shaped image like spore push's, then a copy with one layer swapped.
        layer = c.push_blob(NAME, t)
        cfg = json.dumps({"architecture": "amd64", "os": "linux",
                          "rootfs": {"type": "layers", "diff_ids": [layer]}}).encode()
        cd = c.push_blob(NAME, cfg)
        m = {"schemaVersion": 2, "mediaType": H.MT_MANIFEST, "artifactType": H.SPORE_ARTIFACT_TYPE,
             "config": {"mediaType": H.MT_CONFIG, "digest": cd, "size": len(cfg)},
             "layers": [{"mediaType": H.MT_LAYER_TAR, "digest": layer, "size": len(t),
                         "annotations": {H.ANN_TITLE: "spore-meta.tar"}}]}
        c.put_manifest(NAME, "good", json.dumps(m).encode())
        ndg, nb = H.rebuild_image(c, NAME, "good", "evil", {"spore-meta.tar": evil})
        nm = json.loads(nb)
        check(nm["layers"][0]["digest"] == H.sha256_digest(evil) and
              nm["layers"][0]["annotations"] == {H.ANN_TITLE: "spore-meta.tar"}, "rebuilt layer %s" % nm)
        ncfg = json.loads(c.get_blob(NAME, nm["config"]["digest"]))
        check(ncfg["rootfs"]["diff_ids"] == [H.sha256_digest(evil)], "diff_ids not updated %s" % ncfg)
        check(c.get_manifest(NAME, "evil")[2] == ndg, "rebuilt digest")
    print("  tar builder (exact ustar, symlink and ../ entries), chunk-table parser, image rebuild: ok")


def t_synthetic(tmp):
    d = os.path.join(tmp, "tmpl")
    fake_spore(d, 1)
    m = H.read_manifest(d)
    m["memory"].update(size=8 * H.CHUNK_SIZE)
    m.update(parent=None, generation={"id": "0" * 32, "parent": None, "depth": 0, "counter": 0})
    H.write_manifest(d, m)
    s = os.path.join(tmp, "syn")
    H.make_synthetic_spore(d, s, 6)
    sm = H.read_manifest(s)
    check([c["index"] for c in sm["memory"]["chunks"]] == list(range(6)), "synthetic indexes")
    for c in sm["memory"]["chunks"]:
        check(H.file_digest(os.path.join(s, "chunks", "sha256", c["digest"][7:])) == c["digest"], "chunk name")
    k = os.path.join(tmp, "kid")
    H.make_child_spore(s, k, 2)
    km = H.read_manifest(k)
    pd = H.file_digest(os.path.join(s, "spore", "manifest.json"))
    check(km["parent"] == {"digest": pd} and km["generation"]["depth"] == 1, "child lineage")
    new = {c["digest"] for c in km["memory"]["chunks"]} - {c["digest"] for c in sm["memory"]["chunks"]}
    check(len(new) == 2 and len(os.listdir(os.path.join(k, "chunks", "sha256"))) == 6, "child chunks")
    same = {c["digest"] for c in km["memory"]["chunks"]} - new
    for dg in same:
        a, b = (os.stat(os.path.join(x, "chunks", "sha256", dg[7:])).st_ino for x in (s, k))
        check(a == b, "child chunk not a hard link")
    print("  synthetic spore writer and child maker: ok")


def t_serve(tmp):
    p = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "harness.py"),
                          "serve", "--auth", "bearer", "--faults", "status=503,method=GET,path=/v2/$,count=1"],
                         stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        lines = [p.stdout.readline() for _ in range(4)]
        purl = lines[1].split()[1]
        check(purl.startswith("http://127.0.0.1:"), "serve output %s" % lines)
        check(curl_status(purl + "/v2/")[0] == 401, "bearer gate first")  # auth before faults
        rc, out, _ = curl("-u", "user:pass", purl + "/token?service=sporelet-test")
        tok = json.loads(out)["token"]
        check(curl_status("-H", "Authorization: Bearer " + tok, purl + "/v2/")[0] == 503, "serve fault")
        check(curl_status("-H", "Authorization: Bearer " + tok, purl + "/v2/")[0] == 200, "serve after fault")
    finally:
        p.terminate()
        out, _ = p.communicate(timeout=30)
    check(p.returncode == 0 and "GET /v2/" in out, "serve exit %s, log:\n%s" % (p.returncode, out))
    print("  harness.py serve --auth bearer --faults: ok")


TESTS = [t_registry_none, t_registry_basic, t_proxy_forwarding, t_faults, t_bearer, t_oras, t_tar_and_rebuild,
         t_synthetic, t_serve]


def main():
    why = H.registry_tools_missing()
    if why:
        print("SKIP registry-harness: %s" % why)
        return SKIP
    if not shutil.which("curl"):
        print("SKIP registry-harness: curl is not installed")
        return SKIP
    only = sys.argv[1:]
    tmp = tempfile.mkdtemp(prefix="spore-harness-selftest-")
    t0 = time.monotonic()
    try:
        for t in TESTS:
            if only and t.__name__ not in only:
                continue
            sub = os.path.join(tmp, t.__name__)
            os.mkdir(sub)
            t(sub)
        print("PASS registry-harness (%.1fs)" % (time.monotonic() - t0))
        return 0
    except (Fail, H.HarnessError) as e:
        print("FAIL registry-harness: %s" % e)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
