#!/usr/bin/env python3
"""Chart and CRD tests (label unit): the Helm chart rendered like `helm template`, its values schema, the Sporelet CRD, the generated CRD reference.

Usage: chart_tests.py <test> [--renderer BIN] [--gocache DIR] [--source DIR]
Tests:
  build-renderer  builds tests/chart/render (Go, offline, Debian's sprig,
                  sigs.k8s.io/yaml and gojsonschema) into --renderer
  render          renders with the default values and variants; checks kinds
                  and names, the RuntimeClass, the DaemonSet's host mounts and
                  privileges; runs the node pod's init script and preStop with
                  a stand-in sporelet-node and checks every argv against
                  node/cli/main.c's option table and the values; the shim YAML
                  against shim/src/shim_config.c's keys and ranges and
                  docs/shim.md; exact RBAC rules, the operator's probes, the hook
  values          values.yaml against values.schema.json (python3-jsonschema
                  and, through the renderer, gojsonschema as Helm 3 runs it);
                  bad values are refused by both
  crd             the CRD is structural, its CEL rules are there and behave,
                  subresources and printer columns, the examples validate and
                  broken objects do not; the chart's copy is byte-identical
  crd-doc         docs/crd-reference.md is what scripts/gen-crd-doc.py writes
Exit status: 0 pass, 1 fail, 77 skip (a tool is missing; the reason is printed).
"""

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

SKIP = 77
GOPATH = "/usr/share/gocode"
GO_SOURCES = ["github.com/Masterminds/sprig", "sigs.k8s.io/yaml", "github.com/xeipuuv/gojsonschema"]


class Failed(Exception):
    pass


class Skipped(Exception):
    pass


try:
    import yaml
except ImportError:  # pragma: no cover - reported as a skip
    yaml = None


def need_yaml():
    if yaml is None:
        raise Skipped("python3-yaml is not installed (scripts/setup installs it)")


def need_jsonschema():
    try:
        import jsonschema  # noqa: F401
    except ImportError:
        raise Skipped("python3-jsonschema is not installed (scripts/setup installs it)")


def check(cond, what):
    if not cond:
        raise Failed(what)


class Ctx:
    def __init__(self, args):
        self.src = os.path.abspath(args.source)
        self.chart = os.path.join(self.src, "charts", "sporelet")
        self.crd_path = os.path.join(self.src, "operator-crd", "crds", "sporelet.ai_sporelets.yaml")
        self.renderer = args.renderer
        self.gocache = args.gocache
        self.tmp = tempfile.mkdtemp(prefix="chart-test-")
        self.checks = 0

    def ok(self, cond, what):
        self.checks += 1
        check(cond, what)

    def values_file(self, name, data):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            yaml.safe_dump(data, f)
        return path

    def render_raw(self, *args, notes=False):
        if not self.renderer or not os.access(self.renderer, os.X_OK):
            raise Skipped("no renderer at %r (the unit-chart-build-renderer test builds it)" % self.renderer)
        cmd = [self.renderer] + list(args) + (["--notes"] if notes else []) + [self.chart]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        return p.returncode, p.stdout, p.stderr

    def render(self, *args, name="sl", namespace="sporelet-system"):
        rc, out, err = self.render_raw("--name", name, "--namespace", namespace, *args)
        if rc != 0:
            raise Failed("render %s failed (%d): %s" % (" ".join(args), rc, err.strip()))
        return Objects(self, out)


class Objects:
    """A rendered stream: every document parsed (empty ones dropped, as Helm does)."""

    def __init__(self, ctx, text):
        self.text = text
        self.docs = []
        for i, doc in enumerate(yaml.safe_load_all(text)):
            if doc is None:
                continue
            ctx.ok(isinstance(doc, dict), "document %d is a mapping" % i)
            for key in ("apiVersion", "kind", "metadata"):
                ctx.ok(key in doc, "document %d (%s) has %s" % (i, doc.get("kind"), key))
            ctx.ok(doc["metadata"].get("name"), "document %d (%s) has a name" % (i, doc["kind"]))
            self.docs.append(doc)
        keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in self.docs]
        ctx.ok(len(keys) == len(set(keys)), "no object is rendered twice: %s" % keys)

    def names(self):
        return sorted((d["kind"], d["metadata"]["name"]) for d in self.docs)

    def get(self, kind, name):
        for d in self.docs:
            if d["kind"] == kind and d["metadata"]["name"] == name:
                return d
        raise Failed("no %s %s in the render; have %s" % (kind, name, self.names()))

    def has(self, kind, name):
        return any(d["kind"] == kind and d["metadata"]["name"] == name for d in self.docs)

    def kinds(self, kind):
        return [d for d in self.docs if d["kind"] == kind]


# --------------------------------------------------------------------------- build

def test_build_renderer(ctx):
    go = shutil.which("go")
    if not go:
        raise Skipped("go is not installed (golang-go; scripts/setup installs it)")
    for pkg in GO_SOURCES:
        if not os.path.isdir(os.path.join(GOPATH, "src", pkg)):
            raise Skipped("%s is not in %s (scripts/setup installs the Debian Go packages)" % (pkg, GOPATH))
    env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH, GOFLAGS="", CGO_ENABLED="0",
               GOCACHE=os.path.abspath(ctx.gocache), GOPROXY="off")
    os.makedirs(ctx.gocache, exist_ok=True)
    p = subprocess.run([go, "build", "-o", ctx.renderer, "."], cwd=os.path.join(HERE, "render"),
                       env=env, capture_output=True, text=True, timeout=540)
    ctx.ok(p.returncode == 0, "go build of the renderer: %s" % (p.stderr.strip() or p.stdout.strip()))
    # The renderer refuses what Helm refuses (a bad flag) and renders the chart.
    rc, _, err = ctx.render_raw("--bogus")
    ctx.ok(rc == 2 and "unknown option" in err, "the renderer refuses an unknown option: %d %s" % (rc, err))
    rc, out, err = ctx.render_raw()
    ctx.ok(rc == 0 and "kind: DaemonSet" in out, "the renderer renders the chart: %s" % err)
    # Helm's semantics on a probe chart, byte for byte: "_" files and
    # whitespace-only output left out, NOTES.txt not in the stream, float64
    # values (Helm prints 1000000 as 1e+06), a null override deleting a key,
    # --set integers, missing keys empty, tpl, include, toYaml's layout,
    # .Template/.Chart/.Capabilities/.Release.
    probe = os.path.join(HERE, "testdata", "probe")
    cmd = [ctx.renderer, "--name", "rel", "-n", "ns", "--set", "nested.drop=null", "--set", "small=7", probe]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    with open(os.path.join(HERE, "testdata", "probe.expected.yaml")) as f:
        expected = f.read()
    ctx.ok(p.returncode == 0 and p.stdout == expected, "probe chart output:\n%s\nwant:\n%s%s" % (p.stdout, expected, p.stderr))
    p = subprocess.run([ctx.renderer, "--notes", "--name", "rel", probe], capture_output=True, text=True, timeout=60)
    ctx.ok(p.stdout == "notes for probe-rel\n", "NOTES.txt rendered on its own: %r" % p.stdout)
    p = subprocess.run([ctx.renderer, "--set", "small=null", probe], capture_output=True, text=True, timeout=60)
    ctx.ok(p.returncode == 1 and "need small" in p.stderr, "required fails the render: %s" % p.stderr)


# --------------------------------------------------------------------------- render

def rules_of(role):
    """RBAC rules as a set of (apiGroup, resource, verb, resourceName or '')."""
    out = set()
    for r in role.get("rules") or []:
        for g in r.get("apiGroups") or []:
            for res in r.get("resources") or []:
                for v in r.get("verbs") or []:
                    for n in r.get("resourceNames") or [""]:
                        out.add((g, res, v, n))
    return out


def expand(group, resources, verbs, names=("",)):
    return {(group, r, v, n) for r in resources for v in verbs for n in names}


def env_of(container):
    return {e["name"]: e for e in container.get("env") or []}


def check_no_wildcards(ctx, objs):
    for d in objs.docs:
        if d["kind"] in ("Role", "ClusterRole"):
            for r in d.get("rules") or []:
                for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                    ctx.ok("*" not in (r.get(key) or []), "%s %s: no '*' in %s" % (d["kind"], d["metadata"]["name"], key))
                ctx.ok("nonResourceURLs" not in r, "%s %s: no nonResourceURLs" % (d["kind"], d["metadata"]["name"]))


def check_bindings(ctx, objs, namespace):
    """Every binding points at a role in the render and at service accounts that exist."""
    sas = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in objs.kinds("ServiceAccount")}
    for b in objs.kinds("ClusterRoleBinding") + objs.kinds("RoleBinding"):
        ref = b["roleRef"]
        ctx.ok(ref["apiGroup"] == "rbac.authorization.k8s.io", "%s roleRef group" % b["metadata"]["name"])
        ctx.ok(objs.has(ref["kind"], ref["name"]), "%s %s binds %s %s, which is rendered" % (
            b["kind"], b["metadata"]["name"], ref["kind"], ref["name"]))
        if b["kind"] == "RoleBinding":
            role = objs.get("Role", ref["name"])
            ctx.ok(role["metadata"]["namespace"] == b["metadata"]["namespace"], "Role and RoleBinding share a namespace")
        for s in b["subjects"]:
            ctx.ok(s["kind"] == "ServiceAccount" and (s["namespace"], s["name"]) in sas,
                   "%s subject %s/%s is a rendered ServiceAccount" % (b["metadata"]["name"], s.get("namespace"), s["name"]))
            ctx.ok(s["namespace"] == namespace, "subjects live in the release namespace")


def pod_volumes(pod_spec):
    return {v["name"]: v for v in pod_spec.get("volumes") or []}


def host_mounts(container, volumes):
    """hostPath -> mount (for the container's hostPath volumes)."""
    out = {}
    for m in container.get("volumeMounts") or []:
        v = volumes[m["name"]]
        if "hostPath" in v:
            out[v["hostPath"]["path"]] = m
    return out


def installer_interface(src):
    """sporelet-node's command line as node/cli/main.c defines it: its
    commands and its long options (name -> takes an argument), read from the
    source so the chart and the installer cannot drift apart."""
    with open(os.path.join(src, "node", "cli", "main.c")) as f:
        text = f.read()
    table = re.search(r"static const struct option longopts\[\] = \{(.*?)\n\};", text, re.S)
    check(table, "node/cli/main.c: no longopts table")
    opts = {name: kind == "required_argument"
            for name, kind in re.findall(r'\{"([a-z-]+)", (required_argument|no_argument|optional_argument)', table.group(1))}
    cmds = set(re.findall(r'strcmp\((?:cmd|argv\[1\]), "([a-z]+)"\) == 0', text))
    check(len(opts) >= 17 and {"install", "uninstall", "label", "unlabel"} <= cmds,
          "node/cli/main.c: could not read the interface (options %s, commands %s)" % (sorted(opts), sorted(cmds)))
    return cmds, opts


def operator_interface(src):
    """sporelet-operator's long options (name -> takes an argument), read
    from operator-crd/cli/main.c."""
    with open(os.path.join(src, "operator-crd", "cli", "main.c")) as f:
        text = f.read()
    opts = {name: kind == "required_argument"
            for name, kind in re.findall(r'\{ "([a-z-]+)", (required_argument|no_argument|optional_argument)', text)}
    check(len(opts) >= 15 and "http-addr" in opts, "operator-crd/cli/main.c: could not read the options (%s)" % sorted(opts))
    return opts


def parse_installer_argv(ctx, argv, iface, what):
    """argv (without the program) -> (command, [(flag, value)]), every flag
    and the command checked against node/cli/main.c."""
    cmds, opts = iface
    ctx.ok(argv and argv[0] in cmds, "%s: sporelet-node has no command %r (it has %s)" % (what, argv[:1], sorted(cmds)))
    out = []
    i = 1
    while i < len(argv):
        a = argv[i]
        ctx.ok(a.startswith("--"), "%s: stray argument %r (sporelet-node takes options only): %s" % (what, a, argv))
        name, eq, val = a[2:].partition("=")
        ctx.ok(name in opts, "%s: --%s is not an option of sporelet-node (node/cli/main.c has %s)" % (what, name, sorted(opts)))
        if opts[name] and not eq:
            ctx.ok(i + 1 < len(argv), "%s: --%s needs a value" % (what, name))
            val = argv[i + 1]
            i += 1
        out.append(("--" + name, val))
        i += 1
    return argv[0], out


def run_node_script(ctx, command, env, what):
    """Runs a container's `/bin/sh -c SCRIPT NAME ARGS...` with a stand-in
    sporelet-node on PATH that records each argv: what the installer would
    really receive, after the shell's quoting and expansion."""
    ctx.ok(command[:2] == ["/bin/sh", "-c"] and len(command) >= 4, "%s runs /bin/sh -c SCRIPT NAME ARGS: %s" % (what, command[:2]))
    d = tempfile.mkdtemp(dir=ctx.tmp)
    log = os.path.join(d, "argv.jsonl")
    fake = os.path.join(d, "sporelet-node")
    with open(fake, "w") as f:
        f.write("#!%s\nimport json, sys\nwith open(%r, 'a') as f:\n    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
                % (sys.executable, log))
    os.chmod(fake, 0o755)
    full = dict(env, PATH=d + ":/usr/bin:/bin")
    p = subprocess.run(command, env=full, capture_output=True, text=True, timeout=30)
    ctx.ok(p.returncode == 0, "%s: the script failed (%d): %s" % (what, p.returncode, p.stderr))
    with open(log) as f:
        return [json.loads(line) for line in f]


def check_shim_yaml(ctx, conf, values):
    """The shim YAML as the shim's own parser (shim/src/shim_config.c) takes
    it: its keys and integer ranges read from that source, every key in
    docs/shim.md's table, and the values the chart means."""
    node = values["node"]
    with open(os.path.join(ctx.src, "shim", "src", "shim_config.c")) as f:
        src = f.read()
    keys = set(re.findall(r'strcmp\(key, "([a-z_]+)"\)', src))
    pool_keys = set(re.findall(r'strcmp\(pk, "([a-z_]+)"\)', src))
    ranges = {k: (int(lo), int(hi)) for k, lo, hi in re.findall(r'get_uint\(p?v, what, (?:key|"([a-z_.]+)"), (\d+), (\d+)', src)}
    key_range = re.search(r'"ready_timeout_ms"\)\) \{\s*rc = get_uint\(v, what, key, (\d+), (\d+)', src)
    check(keys and pool_keys and key_range, "shim/src/shim_config.c: could not read its keys")
    ranges["ready_timeout_ms"] = (int(key_range.group(1)), int(key_range.group(2)))
    with open(os.path.join(ctx.src, "docs", "shim.md")) as f:
        rows = [line.split("|")[1] for line in f if line.startswith("| `")]
    documented = {k for r in rows for k in re.findall(r"`([a-z_.]+)`", r)}
    ctx.ok(isinstance(conf, dict), "the shim YAML is a mapping")
    for k, v in conf.items():
        ctx.ok(k in keys, "shim YAML key %r is one the shim reads (%s)" % (k, sorted(keys)))
        ctx.ok(k in documented or k == "pool", "shim YAML key %r is in docs/shim.md's table" % k)
        if k == "pool":
            ctx.ok(isinstance(v, dict), "pool is a mapping")
            for pk, pv in v.items():
                ctx.ok("pool." + pk in documented, "shim YAML key pool.%s is in docs/shim.md's table" % pk)
                ctx.ok(pk in pool_keys, "shim YAML key pool.%s is one the shim reads (%s)" % (pk, sorted(pool_keys)))
                lo, hi = ranges["pool." + pk]
                ctx.ok(isinstance(pv, int) and lo <= pv <= hi, "pool.%s=%r in %d..%d" % (pk, pv, lo, hi))
        elif k in ranges:
            lo, hi = ranges[k]
            ctx.ok(isinstance(v, int) and lo <= v <= hi, "%s=%r in %d..%d" % (k, v, lo, hi))
        else:
            ctx.ok(isinstance(v, str) and v.startswith("/"), "%s is an absolute path: %r" % (k, v))
    ctx.ok(conf["pool"]["memory_mib"] % 2 == 0, "pool.memory_mib is even")
    ctx.ok(len(conf["state_dir"]) <= 80, "state_dir fits the shim's 80 bytes")
    data = node["dataDir"].rstrip("/")
    want = {
        "spore": node["installDir"].rstrip("/") + "/bin/spore",
        "state_dir": node["runDir"].rstrip("/") + "/shim",
        "disk_dir": data + "/disks",
        "ready_timeout_ms": node["shim"]["readyTimeoutMs"],
        "pool": {"size": node["shim"]["pool"]["size"], "memory_mib": node["shim"]["pool"]["memoryMiB"],
                 "vcpus": node["shim"]["pool"]["vcpus"]},
    }
    ctx.ok(conf == want, "the shim YAML is %s, got %s" % (want, conf))


def check_daemonset(ctx, objs, values, fullname, namespace):
    node = values["node"]
    iface = installer_interface(ctx.src)
    ds = objs.get("DaemonSet", fullname + "-node")
    ctx.ok(ds["metadata"]["namespace"] == namespace, "the DaemonSet is in the release namespace")
    spec = ds["spec"]["template"]["spec"]
    sel = ds["spec"]["selector"]["matchLabels"]
    labels = ds["spec"]["template"]["metadata"]["labels"]
    ctx.ok(all(labels.get(k) == v for k, v in sel.items()), "the DaemonSet selector matches its pod labels")
    ctx.ok("app.kubernetes.io/version" not in sel, "the selector has no label that changes on upgrade")
    ctx.ok(spec.get("hostPID") is True, "hostPID (containerd is restarted through the host's PID 1)")
    ctx.ok(spec["serviceAccountName"] == fullname + "-node", "the DaemonSet runs as the node ServiceAccount")
    ctx.ok(spec["nodeSelector"] == node["nodeSelector"], "the DaemonSet's nodeSelector comes from values")
    ctx.ok(spec["tolerations"] == node["tolerations"], "the DaemonSet's tolerations come from values")
    volumes = pod_volumes(spec)
    # The installer works beneath the host's / (--root); the snapshotter
    # needs its socket and data directories at their host paths.
    expected_paths = {"/", node["runDir"], node["dataDir"]}
    hostpaths = {v["hostPath"]["path"] for v in volumes.values() if "hostPath" in v}
    ctx.ok(hostpaths == expected_paths, "hostPath volumes are exactly %s, got %s" % (sorted(expected_paths), sorted(hostpaths)))
    for v in volumes.values():
        if "hostPath" in v:
            want_type = "Directory" if v["hostPath"]["path"] == "/" else "DirectoryOrCreate"
            ctx.ok(v["hostPath"].get("type") == want_type, "hostPath %s is a %s" % (v["hostPath"]["path"], want_type))

    (install,) = spec["initContainers"]
    (snap,) = spec["containers"]
    for c in (install, snap):
        ctx.ok(c["securityContext"].get("privileged") is True, "%s is privileged" % c["name"])
        ctx.ok(env_of(c)["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName",
               "%s gets NODE_NAME from the downward API" % c["name"])
        ctx.ok(c["image"] == "%s:%s" % (node["image"]["repository"], node["image"]["tag"] or "0.1.0"),
               "%s runs the node image: %s" % (c["name"], c["image"]))
        for path, m in host_mounts(c, volumes).items():
            if path != "/":
                ctx.ok(m["mountPath"] == path, "%s mounts host %s at the same path (got %s)" % (c["name"], path, m["mountPath"]))
    install_mounts = host_mounts(install, volumes)
    snap_mounts = host_mounts(snap, volumes)
    ctx.ok(set(install_mounts) == {"/", node["dataDir"]}, "the installer mounts the host's / and the data directory: %s"
           % sorted(install_mounts))
    want_snap = {node["runDir"], node["dataDir"]} | ({"/"} if node.get("uninstallOnStop", True) else set())
    ctx.ok(set(snap_mounts) == want_snap, "the snapshotter container mounts %s, got %s" % (sorted(want_snap), sorted(snap_mounts)))
    ctx.ok(snap_mounts[node["dataDir"]].get("mountPropagation") == "Bidirectional",
           "the data directory propagates the snapshotter's mounts to the host")
    for c, mounts in ((install, install_mounts), (snap, snap_mounts)):
        for path, m in mounts.items():
            if path == "/":
                ctx.ok(m.get("mountPropagation") == "HostToContainer" and not m.get("readOnly"),
                       "%s: the host's / is mounted read-write, HostToContainer" % c["name"])
            elif c is install or path != node["dataDir"]:
                ctx.ok("mountPropagation" not in m, "only the snapshotter's data directory is Bidirectional (%s)" % path)

    # What the installer gets: run the init script with a stand-in sporelet-node.
    label = node["label"]
    data = node["dataDir"].rstrip("/")
    env = {"NODE_NAME": "node-1"}
    for e in install["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
    ctx.ok(env.get("SPORELET_DISK_DIR") == data + "/disks", "the init container makes <dataDir>/disks")
    env["SPORELET_DISK_DIR"] = os.path.join(ctx.tmp, "disks-%d" % ctx.checks)
    calls = run_node_script(ctx, install["command"] + install.get("args", []), env, "the init container")
    ctx.ok(os.path.isdir(env["SPORELET_DISK_DIR"]) and os.stat(env["SPORELET_DISK_DIR"]).st_mode & 0o777 == 0o700,
           "the init script creates the disk directory (0700)")
    ctx.ok([c[0] for c in calls] == ["install", "label"], "the init container runs install, then label: %s" % calls)
    _, install_flags = parse_installer_argv(ctx, calls[0], iface, "install")
    _, label_flags = parse_installer_argv(ctx, calls[1], iface, "label")
    ctx.ok(label_flags == [("--node-name", "node-1"), ("--label", label + "=true")], "label %s=true on $NODE_NAME: %s"
           % (label, label_flags))
    got = dict(install_flags)
    ctx.ok(len(got) == len(install_flags), "no option given twice: %s" % install_flags)
    mount_of = {m["mountPath"]: volumes[m["name"]] for m in install["volumeMounts"]}
    ctx.ok(got["--root"] in mount_of and mount_of[got["--root"]].get("hostPath", {}).get("path") == "/",
           "--root %s is where the host's / is mounted" % got.get("--root"))
    want = {
        "--root": got["--root"],
        "--src": node["imageBinDir"],
        "--install-dir": node["installDir"].rstrip("/") + "/bin",
        "--containerd-config": node["containerd"]["configDir"].rstrip("/") + "/" + node["containerd"]["configFile"],
        "--runtime-name": values["runtimeClass"]["handler"],
        "--snapshotter-socket": node["runDir"].rstrip("/") + "/snapshotter.sock",
        "--shim-config": node["shimConfig"],
        "--shim-config-src": got.get("--shim-config-src"),
        "--shim-link-dir": node["shimLinkDir"],
    }
    if node["containerd"]["setCriSnapshotter"]:
        want["--cri-snapshotter"] = "spore"
    if node["containerd"]["restart"]:
        want["--restart-cmd"] = ("nsenter --target 1 --mount --uts --ipc --net --pid -- systemctl restart "
                                 + node["containerd"]["serviceName"])
    ctx.ok(got == want, "install options:\n  want %s\n  got  %s" % (sorted(want.items()), sorted(got.items())))
    # --shim-config-src is the node Secret's shim.yaml, mounted read-only.
    src_dir, src_name = os.path.split(got["--shim-config-src"])
    ctx.ok(src_dir in mount_of and "secret" in mount_of[src_dir], "--shim-config-src is in a mounted Secret")
    shim_secret = objs.get("Secret", mount_of[src_dir]["secret"]["secretName"])
    ctx.ok([m for m in install["volumeMounts"] if m["mountPath"] == src_dir][0].get("readOnly") is True,
           "the Secret is mounted read-only")
    shim_conf = yaml.safe_load(base64.b64decode(shim_secret["data"][src_name]))
    check_shim_yaml(ctx, shim_conf, values)
    ctx.ok(len(want["--snapshotter-socket"]) <= 107, "the socket path fits sun_path")

    ctx.ok(snap["command"][0] == "spore-snapshotter", "the main container runs the snapshotter")
    socket = want["--snapshotter-socket"]
    for probe in ("startupProbe", "readinessProbe"):
        ctx.ok(snap[probe]["exec"]["command"] == ["test", "-S", socket], "%s checks the snapshotter socket" % probe)
    if node.get("uninstallOnStop", True):
        cmd = snap["lifecycle"]["preStop"]["exec"]["command"]
        ctx.ok(not any("$(" in a for a in cmd), "no $(VAR) in preStop (Kubernetes does not expand it there)")
        senv = {"NODE_NAME": "node-1"}
        for e in snap["env"]:
            if "value" in e:
                senv[e["name"]] = e["value"]
        calls = run_node_script(ctx, cmd, senv, "preStop")
        ctx.ok([c[0] for c in calls] == ["unlabel", "uninstall"], "preStop runs unlabel, then uninstall: %s" % calls)
        _, unlabel_flags = parse_installer_argv(ctx, calls[0], iface, "unlabel")
        ctx.ok(unlabel_flags == [("--node-name", "node-1"), ("--label", label)], "unlabel %s on $NODE_NAME: %s"
               % (label, unlabel_flags))
        _, un_flags = parse_installer_argv(ctx, calls[1], iface, "uninstall")
        same = {k: v for k, v in got.items() if k not in ("--src", "--shim-config-src")}
        ctx.ok(dict(un_flags) == same, "uninstall gets install's paths: %s" % un_flags)
        smount = {m["mountPath"]: volumes[m["name"]] for m in snap["volumeMounts"]}
        ctx.ok(smount.get(dict(un_flags)["--root"], {}).get("hostPath", {}).get("path") == "/",
               "the snapshotter container has the host's / at --root for the uninstall")
        ctx.ok(spec["terminationGracePeriodSeconds"] >= 60, "the grace period leaves time for the uninstall")
    else:
        ctx.ok("lifecycle" not in snap, "no preStop with node.uninstallOnStop=false")

    # The snapshotter's configuration: a Secret mounted read-only, matching the installer's socket.
    secret_vol = volumes["node-config"]["secret"]["secretName"]
    secret = objs.get("Secret", secret_vol)
    conf = yaml.safe_load(base64.b64decode(secret["data"]["snapshotter.yaml"]))
    ctx.ok(conf["address"] == socket, "the snapshotter listens where containerd is told to connect")
    ctx.ok(conf["root"] == data + "/snapshotter" and conf["cache_dir"] == data + "/cache",
           "the snapshotter's store and cache are under the data directory: %s" % conf)
    ctx.ok(os.path.dirname(shim_conf["disk_dir"]) == os.path.dirname(conf["cache_dir"]),
           "the shim's disk_dir is beside the node cache (same filesystem: reflinks)")
    ctx.ok(conf["log_level"] == node["snapshotter"]["logLevel"], "the snapshotter log level comes from values")
    ctx.ok(snap["command"][1:] == ["--config", "/etc/sporelet/snapshotter.yaml"], "the snapshotter reads the mounted config")
    cfgmount = [m for m in snap["volumeMounts"] if m["name"] == "node-config"][0]
    ctx.ok(cfgmount["mountPath"] == "/etc/sporelet" and cfgmount.get("readOnly") is True, "the config is mounted read-only")
    ann = ds["spec"]["template"]["metadata"]["annotations"]
    digest = ann["checksum/snapshotter-config"]
    ctx.ok(re.fullmatch(r"[0-9a-f]{64}", digest), "the pod template carries the config's checksum")
    ctx.ok(re.fullmatch(r"[0-9a-f]{64}", ann["checksum/shim-config"]), "the pod template carries the shim config's checksum")
    return conf, digest + ann["checksum/shim-config"]


def check_operator(ctx, objs, values, fullname, namespace):
    op = values["operator"]
    dep = objs.get("Deployment", fullname + "-operator")
    ctx.ok(dep["metadata"]["namespace"] == namespace, "the operator is in the release namespace")
    ctx.ok(dep["spec"]["replicas"] == op["replicas"], "operator replicas from values")
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    ports = {p["name"]: p for p in c["ports"]}
    ctx.ok(ports["http"]["containerPort"] == op["port"], "the operator listens on operator.port")
    ctx.ok(c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, "liveness probe hits /healthz")
    ctx.ok(c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, "readiness probe hits /readyz")
    ctx.ok(c["command"] == ["sporelet-operator"], "the operator container runs sporelet-operator")
    ctx.ok("--runtime-class=%s" % values["runtimeClass"]["name"] in c["args"], "the operator is told the RuntimeClass name")
    ctx.ok("--http-addr=:%d" % op["port"] in c["args"], "the operator serves on its port")
    oopts = operator_interface(ctx.src)
    for a in c["args"]:
        name = a[2:].split("=", 1)[0] if a.startswith("--") else None
        ctx.ok(name in oopts, "operator argument %r is not an option of sporelet-operator (operator-crd/cli/main.c has %s)"
               % (a, sorted(oopts)))
        if name in oopts:
            ctx.ok(oopts[name] == ("=" in a), "operator argument %r: --%s %s" % (
                a, name, "takes a value" if oopts[name] else "takes no value"))
    sc = c["securityContext"]
    ctx.ok(sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"],
           "the operator is unprivileged")
    ctx.ok(spec["securityContext"]["runAsNonRoot"] is True, "the operator runs as non-root")
    ctx.ok(spec["serviceAccountName"] == fullname + "-operator", "the operator runs as its ServiceAccount")
    envs = env_of(c)
    ctx.ok(envs["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace", "POD_NAMESPACE from the downward API")
    sel = dep["spec"]["selector"]["matchLabels"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    ctx.ok(all(labels.get(k) == v for k, v in sel.items()), "the Deployment selector matches its pod labels")
    if op["metrics"]["service"]["enabled"]:
        svc = objs.get("Service", fullname + "-operator-metrics")
        ctx.ok(svc["spec"]["selector"] == sel, "the metrics Service selects the operator pods")
        (p,) = svc["spec"]["ports"]
        ctx.ok(p["targetPort"] == "http" and p["name"] == "metrics" and p["port"] == op["metrics"]["service"]["port"],
               "the metrics Service forwards to the operator's http port")
    lease = None
    if op["leaderElection"]["enabled"]:
        ctx.ok("--leader-elect" in c["args"], "leader election is on")
        lease = [a.split("=", 1)[1] for a in c["args"] if a.startswith("--lease-name=")][0]
        ctx.ok("--lease-namespace=$(POD_NAMESPACE)" in c["args"], "the lease is in the pod's namespace")
        ctx.ok(envs["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name",
               "POD_NAME (the operator's default holder identity) from the downward API")
    else:
        ctx.ok(not any(a.startswith(("--leader", "--lease")) for a in c["args"]), "no leader-election flags when it is off")
    return lease


def operator_rules():
    return (expand("sporelet.ai", ["sporelets"], ["get", "list", "watch"])
            | expand("sporelet.ai", ["sporelets/status"], ["get", "patch"])
            | expand("sporelet.ai", ["sporelets/finalizers"], ["update"])
            | expand("", ["pods"], ["get", "list", "watch", "create", "delete"]))


def check_rbac(ctx, objs, values, fullname, namespace, lease):
    check_no_wildcards(ctx, objs)
    check_bindings(ctx, objs, namespace)
    if values["operator"]["enabled"]:
        cr = objs.get("ClusterRole", fullname + "-operator")
        ctx.ok(rules_of(cr) == operator_rules(), "operator ClusterRole is exactly %s; got %s" % (
            sorted(operator_rules()), sorted(rules_of(cr))))
        if lease:
            role = objs.get("Role", fullname + "-operator-leader-election")
            ctx.ok(role["metadata"]["namespace"] == namespace, "the lease Role is namespaced to the release")
            want = expand("coordination.k8s.io", ["leases"], ["create"]) | \
                expand("coordination.k8s.io", ["leases"], ["get", "update"], [lease])
            ctx.ok(rules_of(role) == want, "lease Role is create + get/update of %s only; got %s" % (lease, sorted(rules_of(role))))
    if values["node"]["enabled"]:
        cr = objs.get("ClusterRole", fullname + "-node")
        ctx.ok(rules_of(cr) == expand("", ["nodes"], ["get", "patch"]), "node ClusterRole is get/patch nodes only; got %s" % sorted(rules_of(cr)))
    if values["rbac"].get("aggregateToDefaultRoles"):
        edit = objs.get("ClusterRole", fullname + "-edit")
        view = objs.get("ClusterRole", fullname + "-view")
        ctx.ok(edit["metadata"]["labels"].get("rbac.authorization.k8s.io/aggregate-to-edit") == "true", "edit aggregates to edit")
        ctx.ok(view["metadata"]["labels"].get("rbac.authorization.k8s.io/aggregate-to-view") == "true", "view aggregates to view")
        ctx.ok(not any(r[0] != "sporelet.ai" for r in rules_of(edit) | rules_of(view)), "the user roles only cover sporelet.ai")
        ctx.ok(all(r[2] in ("get", "list", "watch") for r in rules_of(view)), "the view role only reads")
        ctx.ok(("sporelet.ai", "sporelets/scale", "update", "") in rules_of(edit), "editors can scale Sporelets")
        ctx.ok(not any(r[1] == "sporelets/status" and r[2] != "get" for r in rules_of(edit)), "editors cannot write status")


def check_hook(ctx, objs, fullname, namespace, timeout):
    name = fullname + "-node-cleanup"
    job = objs.get("Job", name)
    weights = {}
    for kind in ("ServiceAccount", "Role", "RoleBinding", "Job"):
        o = objs.get(kind, name)
        ann = o["metadata"]["annotations"]
        ctx.ok(ann["helm.sh/hook"] == "pre-delete", "%s %s is a pre-delete hook" % (kind, name))
        ctx.ok("hook-succeeded" in ann["helm.sh/hook-delete-policy"], "%s is removed after the hook" % kind)
        weights[kind] = int(ann["helm.sh/hook-weight"])
    ctx.ok(max(weights[k] for k in ("ServiceAccount", "Role", "RoleBinding")) < weights["Job"],
           "the hook's RBAC exists before its Job runs: %s" % weights)
    role = objs.get("Role", name)
    ds_name = fullname + "-node"
    ctx.ok(rules_of(role) == expand("apps", ["daemonsets"], ["get", "delete", "list", "watch"], [ds_name]),
           "the hook may only touch DaemonSet %s: %s" % (ds_name, sorted(rules_of(role))))
    spec = job["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    ctx.ok(spec["serviceAccountName"] == name and spec["restartPolicy"] == "Never", "the Job runs as the hook's ServiceAccount")
    ctx.ok(c["args"][:2] == ["delete", "daemonset/" + ds_name], "the hook deletes the node DaemonSet: %s" % c["args"])
    for flag in ("--cascade=foreground", "--wait=true", "--namespace=" + namespace, "--timeout=%ds" % timeout):
        ctx.ok(flag in c["args"], "the hook deletes with %s" % flag)
    ctx.ok(job["spec"]["activeDeadlineSeconds"] > timeout, "the Job outlives kubectl's own timeout")


def expected_names(fullname, values):
    names = set()
    if values["runtimeClass"]["create"]:
        names.add(("RuntimeClass", values["runtimeClass"]["name"]))
    if values["operator"]["enabled"]:
        names |= {("Deployment", fullname + "-operator"), ("ServiceAccount", fullname + "-operator")}
        if values["operator"]["metrics"]["service"]["enabled"]:
            names.add(("Service", fullname + "-operator-metrics"))
        if values["rbac"]["create"]:
            names |= {("ClusterRole", fullname + "-operator"), ("ClusterRoleBinding", fullname + "-operator")}
            if values["operator"]["leaderElection"]["enabled"]:
                names |= {("Role", fullname + "-operator-leader-election"), ("RoleBinding", fullname + "-operator-leader-election")}
    if values["node"]["enabled"]:
        names |= {("DaemonSet", fullname + "-node"), ("ServiceAccount", fullname + "-node"),
                  ("Secret", fullname + "-node-snapshotter")}
        if values["rbac"]["create"]:
            names |= {("ClusterRole", fullname + "-node"), ("ClusterRoleBinding", fullname + "-node")}
            if values["node"]["uninstallOnStop"] and values["node"]["cleanupHook"]["enabled"]:
                hook = fullname + "-node-cleanup"
                names |= {("ServiceAccount", hook), ("Role", hook), ("RoleBinding", hook), ("Job", hook)}
    if values["rbac"]["create"] and values["rbac"]["aggregateToDefaultRoles"]:
        names |= {("ClusterRole", fullname + "-edit"), ("ClusterRole", fullname + "-view")}
    return names


def merged_values(ctx, override):
    with open(os.path.join(ctx.chart, "values.yaml")) as f:
        base = yaml.safe_load(f)

    def merge(a, b):
        for k, v in b.items():
            if isinstance(v, dict) and isinstance(a.get(k), dict):
                merge(a[k], v)
            else:
                a[k] = v
        return a
    return merge(base, override)


def render_and_check(ctx, label, override, name="sl", namespace="sporelet-system", extra=()):
    values = merged_values(ctx, override)
    args = ["-f", ctx.values_file(label + ".yaml", override)] + list(extra) if override else list(extra)
    objs = ctx.render(*args, name=name, namespace=namespace)
    fullname = values.get("fullnameOverride") or (name if "sporelet" in name else name + "-sporelet")
    want = expected_names(fullname, values)
    ctx.ok(set(objs.names()) == want, "%s: rendered objects are exactly %s; got %s" % (
        label, sorted(want), objs.names()))
    cluster_scoped = {"RuntimeClass", "ClusterRole", "ClusterRoleBinding"}
    for d in objs.docs:
        if d["kind"] in cluster_scoped:
            ctx.ok("namespace" not in d["metadata"], "%s %s is cluster-scoped" % (d["kind"], d["metadata"]["name"]))
        else:
            ctx.ok(d["metadata"].get("namespace") == namespace, "%s %s is in %s" % (d["kind"], d["metadata"]["name"], namespace))
        ctx.ok(d["metadata"]["labels"].get("app.kubernetes.io/instance") == name, "%s carries the instance label" % d["metadata"]["name"])
    result = {"objs": objs, "values": values, "fullname": fullname}
    if values["runtimeClass"]["create"]:
        rc = objs.get("RuntimeClass", values["runtimeClass"]["name"])
        ctx.ok(rc["apiVersion"] == "node.k8s.io/v1", "RuntimeClass is node.k8s.io/v1")
        ctx.ok(rc["handler"] == values["runtimeClass"]["handler"], "RuntimeClass handler is %s" % values["runtimeClass"]["handler"])
        ctx.ok(rc["overhead"]["podFixed"] == values["runtimeClass"]["overhead"]["podFixed"],
               "RuntimeClass overhead %s is the values' %s" % (rc["overhead"], values["runtimeClass"]["overhead"]))
        ctx.ok(rc["scheduling"]["nodeSelector"] == {values["node"]["label"]: "true"},
               "the RuntimeClass schedules onto nodes labelled %s=true" % values["node"]["label"])
    if values["node"]["enabled"]:
        result["conf"], result["digest"] = check_daemonset(ctx, objs, values, fullname, namespace)
    lease = check_operator(ctx, objs, values, fullname, namespace) if values["operator"]["enabled"] else None
    if values["rbac"]["create"]:
        check_rbac(ctx, objs, values, fullname, namespace, lease)
    if ("Job", fullname + "-node-cleanup") in want:
        check_hook(ctx, objs, fullname, namespace, values["node"]["cleanupHook"]["timeoutSeconds"])
    return result


def test_render(ctx):
    need_yaml()
    default = render_and_check(ctx, "default", {})
    ctx.ok(default["objs"].get("RuntimeClass", "sporelet")["handler"] == "spore", "the default handler is spore")

    render_and_check(ctx, "overhead", {"runtimeClass": {"overhead": {"podFixed": {"cpu": "1", "memory": "512Mi"}}}})
    # --set: integers stay integers, as in Helm's strvals.
    objs = ctx.render("--set", "runtimeClass.overhead.podFixed.memory=1Gi,runtimeClass.overhead.podFixed.cpu=2")
    ctx.ok(objs.get("RuntimeClass", "sporelet")["overhead"]["podFixed"] == {"cpu": 2, "memory": "1Gi"}, "--set overhead")
    objs = ctx.render("--set", "runtimeClass.overhead=null")
    ctx.ok("overhead" not in objs.get("RuntimeClass", "sporelet"), "a null override removes the overhead")

    paths = render_and_check(ctx, "paths", {"node": {
        "installDir": "/usr/local/sporelet", "shimLinkDir": "/usr/bin", "runDir": "/run/spx", "dataDir": "/data/sporelet",
        "containerd": {"configDir": "/etc/k3s/containerd", "configFile": "k3s.toml", "restart": False}}})
    ctx.ok(paths["conf"]["address"] == "/run/spx/snapshotter.sock", "the socket follows node.runDir")
    render_and_check(ctx, "shim", {"node": {
        "shimConfig": "/etc/spx/shim-config.yaml", "imageBinDir": "/usr/libexec/sporelet",
        "shim": {"readyTimeoutMs": 5000, "pool": {"size": 4, "memoryMiB": 512, "vcpus": 2}},
        "containerd": {"setCriSnapshotter": False, "serviceName": "k3s-agent.service"}}})

    creds = render_and_check(ctx, "registries", {"node": {"snapshotter": {
        "logLevel": "debug", "insecureRegistries": ["10.0.0.5:5000"],
        "registries": {"reg.example:5000": {"mirrors": ["mirror.local:5000"], "insecure": False,
                                             "username": "puller", "password": "p\"a:ss\\word#"}},
        "cacheGC": {"enabled": True, "intervalSeconds": 60, "maxMiB": 2048}}}})
    conf = creds["conf"]
    ctx.ok(conf["registries"] == {"reg.example:5000": {"mirrors": ["mirror.local:5000"], "insecure": False,
                                                       "username": "puller", "password": "p\"a:ss\\word#"}},
           "registry settings reach the snapshotter intact (quoting): %s" % conf.get("registries"))
    ctx.ok(conf["insecure_registries"] == ["10.0.0.5:5000"], "insecure registries reach the snapshotter")
    ctx.ok(conf["cache_gc"] == {"interval_s": 60, "max_mib": 2048}, "cache GC reaches the snapshotter: %s" % conf.get("cache_gc"))
    ctx.ok("cache_gc" not in default["conf"] and "registries" not in default["conf"], "defaults leave GC off and no registries")
    ctx.ok(creds["digest"] != default["digest"], "a new snapshotter config changes the pod template checksum")
    ctx.ok("puller" not in creds["objs"].text and "word#" not in creds["objs"].text,
           "credentials appear only base64-encoded in the Secret")

    render_and_check(ctx, "no-operator", {"operator": {"enabled": False}})
    render_and_check(ctx, "no-node", {"node": {"enabled": False}})
    render_and_check(ctx, "no-rbac", {"rbac": {"create": False}})
    render_and_check(ctx, "no-leader", {"operator": {"leaderElection": {"enabled": False}}})
    render_and_check(ctx, "no-uninstall", {"node": {"uninstallOnStop": False}})
    render_and_check(ctx, "no-runtimeclass", {"runtimeClass": {"create": False}})
    other = render_and_check(ctx, "handler", {"runtimeClass": {"name": "sporelet-canary", "handler": "spore-canary"},
                                              "node": {"label": "example.com/spore-canary"}})
    ctx.ok(other["objs"].has("RuntimeClass", "sporelet-canary"), "the RuntimeClass name comes from values")
    render_and_check(ctx, "ha", {"operator": {"replicas": 3, "port": 9443, "leaderElection": {"leaseName": "sporelet-leader"},
                                              "metrics": {"service": {"enabled": True, "port": 9090}}}})
    render_and_check(ctx, "fullname", {"fullnameOverride": "spx"}, name="other")
    render_and_check(ctx, "release-with-chart-name", {}, name="sporelet", namespace="kube-system")
    tagged = render_and_check(ctx, "tags", {"node": {"image": {"repository": "reg.example/sporelet-node", "tag": "1.2.3"}}})
    ds = tagged["objs"].get("DaemonSet", "sl-sporelet-node")
    ctx.ok(ds["spec"]["template"]["spec"]["containers"][0]["image"] == "reg.example/sporelet-node:1.2.3", "node image tag from values")

    # `required` works: no ServiceAccount name when the chart does not create one.
    rc, _, err = ctx.render_raw("--set", "serviceAccount.operator.create=false")
    ctx.ok(rc == 1 and "serviceAccount.operator.name is required" in err, "required() refuses a missing SA name: %s" % err)
    objs = ctx.render("--set", "serviceAccount.operator.create=false,serviceAccount.operator.name=existing-sa")
    ctx.ok(objs.get("Deployment", "sl-sporelet-operator")["spec"]["template"]["spec"]["serviceAccountName"] == "existing-sa",
           "an existing ServiceAccount is used by name")
    ctx.ok(not objs.has("ServiceAccount", "existing-sa"), "an existing ServiceAccount is not created")

    rc, notes, err = ctx.render_raw("--name", "demo", "--namespace", "ops", notes=True)
    ctx.ok(rc == 0, "NOTES.txt renders: %s" % err)
    for s in ("daemonset/demo-sporelet-node", "runtimeClassName: sporelet", "kubectl get sporelets",
              "sporelet.ai/runtime=true", "cpu=250m memory=160Mi", 'default snapshotter is now "spore"'):
        ctx.ok(s in notes, "NOTES mentions %r" % s)
    rc, notes, err = ctx.render_raw("--set", "node.containerd.setCriSnapshotter=false", notes=True)
    ctx.ok(rc == 0 and "default snapshotter" not in notes, "NOTES says nothing of the CRI snapshotter when it is left alone")
    ctx.ok("<no value>" not in notes and "{{" not in notes, "NOTES has no unrendered values")
    ctx.ok("<no value>" not in default["objs"].text, "no <no value> in the manifests")


# --------------------------------------------------------------------------- values

BAD_VALUES = [
    ("unknown top-level key", {"bogus": 1}),
    ("unknown node key", {"node": {"installdir": "/opt/x"}}),
    ("relative installDir", {"node": {"installDir": "opt/sporelet"}}),
    ("no shimLinkDir", {"node": {"shimLinkDir": None}}),
    ("installDir /", {"node": {"installDir": "/"}}),
    ("odd pool memory", {"node": {"shim": {"pool": {"size": 1, "memoryMiB": 257, "vcpus": 1}}}}),
    ("pool too big", {"node": {"shim": {"pool": {"size": 65, "memoryMiB": 256, "vcpus": 1}}}}),
    ("ready timeout too short", {"node": {"shim": {"readyTimeoutMs": 10, "pool": {"size": 0, "memoryMiB": 256, "vcpus": 1}}}}),
    ("runDir too long for the shim's sockets", {"node": {"runDir": "/run/" + "x" * 71}}),
    ("relative shimConfig", {"node": {"shimConfig": "shim.yaml"}}),
    ("setCriSnapshotter not a bool", {"node": {"containerd": {"setCriSnapshotter": "yes"}}}),
    ("service name with a space", {"node": {"containerd": {"serviceName": "containerd; reboot"}}}),
    ("removed node.logLevel", {"node": {"logLevel": "info"}}),
    ("installDir with ..", {"node": {"installDir": "/opt/../etc"}}),
    ("handler not a DNS label", {"runtimeClass": {"handler": "Spore_X"}}),
    ("overhead not a quantity", {"runtimeClass": {"overhead": {"podFixed": {"memory": "lots"}}}}),
    ("negative overhead", {"runtimeClass": {"overhead": {"podFixed": {"cpu": -1}}}}),
    ("two operators without leader election", {"operator": {"replicas": 2, "leaderElection": {"enabled": False}}}),
    ("bad pull policy", {"operator": {"image": {"pullPolicy": "Sometimes"}}}),
    ("bad log level", {"node": {"snapshotter": {"logLevel": "trace"}}}),
    ("five mirrors", {"node": {"snapshotter": {"registries": {"r:1": {"mirrors": ["a", "b", "c", "d", "e"]}}}}}),
    ("username without password", {"node": {"snapshotter": {"registries": {"r:1": {"username": "u"}}}}}),
    ("empty registry entry", {"node": {"snapshotter": {"registries": {"r:1": {}}}}}),
    ("bad node label", {"node": {"label": "-bad/"}}),
    ("port out of range", {"operator": {"port": 70000}}),
    ("unknown toleration key", {"node": {"tolerations": [{"operator": "Exists", "effects": "NoSchedule"}]}}),
    ("containerd config not toml", {"node": {"containerd": {"configFile": "config.yaml"}}}),
    ("string replicas", {"operator": {"replicas": "2"}}),
    ("unknown affinity kind", {"operator": {"affinity": {"nodeAfinity": {}}}}),
    ("bad image tag", {"node": {"image": {"tag": "v1 beta"}}}),
    ("short GC interval type", {"node": {"snapshotter": {"cacheGC": {"enabled": True, "intervalSeconds": "60"}}}}),
]

GOOD_VALUES = [
    ("defaults", {}),
    ("ha operator", {"operator": {"replicas": 3}}),
    ("no leader election with one replica", {"operator": {"leaderElection": {"enabled": False}}}),
    ("registries", {"node": {"snapshotter": {"registries": {"reg.example:5000": {"mirrors": ["m:5000"], "username": "u", "password": "p"}}}}}),
    ("numeric overhead", {"runtimeClass": {"overhead": {"podFixed": {"cpu": 1, "memory": "1.5Gi"}}}}),
    ("pinned tag", {"node": {"image": {"tag": "0.1.0@sha256:" + "a" * 64}}}),
    ("k3s paths", {"node": {"containerd": {"configDir": "/var/lib/rancher/k3s/agent/etc/containerd", "configFile": "config-v3.toml.tmpl.toml"}}}),
]


def test_values(ctx):
    need_yaml()
    need_jsonschema()
    import jsonschema
    with open(os.path.join(ctx.chart, "values.schema.json")) as f:
        schema = json.load(f)
    jsonschema.Draft7Validator.check_schema(schema)
    ctx.ok(schema["$schema"] == "http://json-schema.org/draft-07/schema#", "the schema declares draft-07")
    validator = jsonschema.Draft7Validator(schema)

    # Strictness: every object node with properties closes them.
    def walk(node, path):
        if isinstance(node, dict):
            if "properties" in node:
                ctx.ok(node.get("additionalProperties") is False, "%s has additionalProperties: false" % path)
            for k, v in node.items():
                # if/then/else and not hold partial constraints on already-closed objects.
                if k not in ("if", "then", "else", "not"):
                    walk(v, path + "/" + k)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, "%s/%d" % (path, i))
    walk(schema, "#")

    # Every key of values.yaml is described by the schema (no key valid only by accident).
    with open(os.path.join(ctx.chart, "values.yaml")) as f:
        values = yaml.safe_load(f)
    errs = [e.message for e in validator.iter_errors(values)]
    ctx.ok(not errs, "values.yaml validates: %s" % errs)

    def described(v, node, path):
        if "$ref" in node:
            node = schema["definitions"][node["$ref"].split("/")[-1]]
        if isinstance(v, dict) and "properties" in node:
            for k, sub in v.items():
                ctx.ok(k in node["properties"], "values key %s.%s is in the schema" % (path, k))
                described(sub, node["properties"][k], path + "." + k)
    described(values, schema, "")

    for label, override in GOOD_VALUES:
        v = merged_values(ctx, override)
        errs = [e.message for e in validator.iter_errors(v)]
        ctx.ok(not errs, "good values %r validate (python): %s" % (label, errs))
        rc, _, err = ctx.render_raw("-f", ctx.values_file("good.yaml", override))
        ctx.ok(rc == 0, "good values %r render (gojsonschema): %s" % (label, err))
    for label, override in BAD_VALUES:
        v = merged_values(ctx, override)
        errs = [e.message for e in validator.iter_errors(v)]
        ctx.ok(errs, "bad values %r are refused by python3-jsonschema" % label)
        rc, _, err = ctx.render_raw("-f", ctx.values_file("bad.yaml", override))
        ctx.ok(rc == 1 and "values don't meet the specifications of the schema" in err,
               "bad values %r are refused by the renderer as Helm 3 would: rc=%d %s" % (label, rc, err.strip()))
    # --set goes through the same check.
    rc, _, err = ctx.render_raw("--set", "node.installDir=relative/dir")
    ctx.ok(rc == 1 and "node.installDir" in err, "--set values are validated too: %s" % err)


# --------------------------------------------------------------------------- CRD

SPORE_OK = [
    "busybox", "hello:v1", "localhost:5000/a/b:tag", "registry.example:5000/spores/hello:v1",
    "reg.example.com/x/y@sha256:" + "0" * 64, "reg:5000/x:1.0@sha256:" + "ab" * 32,
    "a__b/c-d.e:TAG_1", "a--b/c", "Reg.Example.COM/lower/path:Mixed.Tag-1", "10.0.0.5:5000/spore",
    "x:" + "t" * 128, "UPPER/x",  # an upper-case first component is a registry host (distribution/reference)
]
SPORE_BAD = [
    "upper/X", "UPPER", "x:", "x@sha256:abc", "x:tag:tag", "/x", "x/", "x..y", "-x", "x:-tag", "x y",
    "x@sha512:" + "0" * 64, "x@sha256:" + "A" * 64, "x:" + "t" * 129, "reg:port/x", "x_/y", "_x",
    "reg.example/x:tag@", "https://reg.example/x",
]


def crd_version(crd):
    (v,) = crd["spec"]["versions"]
    return v


def find_rules(node, path=""):
    out = {}
    for r in node.get("x-kubernetes-validations") or []:
        out.setdefault(path or ".", []).append(r)
    for name, sub in (node.get("properties") or {}).items():
        out.update(find_rules(sub, path + "." + name))
    for key, suffix in (("additionalProperties", "[*]"), ("items", "[]")):
        if isinstance(node.get(key), dict):
            out.update(find_rules(node[key], path + suffix))
    return out


def broken(base, path, value):
    """A deep copy of base with the dotted path set (None deletes)."""
    import copy
    obj = copy.deepcopy(base)
    keys = path.split(".")
    cur = obj
    for k in keys[:-1]:
        cur = cur[int(k)] if isinstance(cur, list) else cur.setdefault(k, {})
    if value is None:
        del cur[keys[-1]]
    elif isinstance(cur, list):
        cur[int(keys[-1])] = value
    else:
        cur[keys[-1]] = value
    return obj


def test_crd(ctx):
    need_yaml()
    need_jsonschema()
    import cel
    import k8s_schema
    with open(ctx.crd_path, "rb") as f:
        raw = f.read()
    chart_copy = os.path.join(ctx.chart, "crds", "sporelet.ai_sporelets.yaml")
    with open(chart_copy, "rb") as f:
        ctx.ok(f.read() == raw, "charts/sporelet/crds/ holds the same bytes as operator-crd/crds/ (cp %s %s)" % (
            os.path.relpath(ctx.crd_path, ctx.src), os.path.relpath(chart_copy, ctx.src)))
    ctx.ok(os.listdir(os.path.join(ctx.chart, "crds")) == ["sporelet.ai_sporelets.yaml"], "crds/ holds only the CRD")
    ctx.ok("{{" not in raw.decode(), "the CRD is not a template (Helm does not render crds/)")
    crd = yaml.safe_load(raw)
    ctx.ok(crd["apiVersion"] == "apiextensions.k8s.io/v1" and crd["kind"] == "CustomResourceDefinition", "a v1 CRD")
    spec = crd["spec"]
    ctx.ok(crd["metadata"]["name"] == "%s.%s" % (spec["names"]["plural"], spec["group"]), "the CRD name is <plural>.<group>")
    ctx.ok(spec["group"] == "sporelet.ai" and spec["scope"] == "Namespaced", "sporelet.ai, namespaced")
    ctx.ok(spec["names"]["kind"] == "Sporelet" and spec["names"]["plural"] == "sporelets" and
           spec["names"]["listKind"] == "SporeletList", "names")
    v = crd_version(crd)
    ctx.ok(v["name"] == "v1alpha1" and v["served"] is True and v["storage"] is True, "v1alpha1 served and stored")
    ctx.ok(v["subresources"]["status"] == {}, "status subresource")
    ctx.ok(v["subresources"]["scale"] == {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                                          "labelSelectorPath": ".status.selector"}, "scale subresource")
    cols = [(c["name"], c["type"], c["jsonPath"]) for c in v["additionalPrinterColumns"]]
    ctx.ok(cols == [("Spore", "string", ".spec.spore"), ("Digest", "string", ".status.resolvedDigest"),
                    ("Replicas", "integer", ".spec.replicas"), ("Ready", "integer", ".status.readyReplicas"),
                    ("Age", "date", ".metadata.creationTimestamp")], "printer columns: %s" % cols)
    schema = v["schema"]["openAPIV3Schema"]

    # Every printer column and scale path points at a field of the schema.
    def field(path):
        node = schema
        for part in path.strip(".").split("."):
            if part == "metadata":
                return node["properties"]["metadata"]
            node = node["properties"][part]
        return node
    for _, typ, path in cols:
        if not path.startswith(".metadata"):
            ctx.ok(field(path)["type"] == typ, "column %s has the field's type %s" % (path, typ))
    for key in ("specReplicasPath", "statusReplicasPath"):
        ctx.ok(field(v["subresources"]["scale"][key])["type"] == "integer", "%s is an integer field" % key)
    ctx.ok(field(".status.selector")["type"] == "string", "the scale selector is a string field")

    errs = k8s_schema.structural_errors(schema)
    ctx.ok(not errs, "the schema is structural: %s" % errs)
    # The checker itself catches a non-structural schema.
    bad = {"type": "object", "properties": {"a": {"properties": {"b": {"type": "string"}}},
                                            "c": {"type": "string", "anyOf": [{"type": "string", "maxLength": 3}]},
                                            "d": {"type": "array", "items": {"type": "string"}},
                                            "e": {"type": "string", "maxLength": 9,
                                                  "x-kubernetes-validations": [{"rule": "self.frobnicate()"}]}}}
    errs = k8s_schema.structural_errors(bad)
    for want in (".a: no type", ".c.anyOf[0]: type", ".d: array without maxItems", ".e: rule"):
        ctx.ok(any(e.startswith(want) for e in errs), "the structural checker reports %r: %s" % (want, errs))

    rules = find_rules(schema)
    rule_paths = {p: [r["rule"] for r in rs] for p, rs in rules.items()}
    for path in (".spec", ".spec.spore", ".spec.replicas", ".spec.env[]", ".spec.env[].name", ".spec.env[].valueFrom",
                 ".spec.fork.hostnamePattern", ".spec.fork.env[].name", ".spec.fork.env[].value",
                 ".spec.template.labels", ".spec.template.annotations", ".spec.template.tolerations[]",
                 ".status", ".status.resolvedDigest"):
        ctx.ok(path in rule_paths, "a CEL rule guards %s (have %s)" % (path, sorted(rule_paths)))
    ctx.ok(rule_paths[".spec.replicas"] == ["self >= 0"], "replicas >= 0 is a CEL rule")
    for path, rs in rules.items():
        for r in rs:
            ctx.ok(r.get("message"), "rule %s at %s has a message" % (r["rule"], path))

    # The spore rule, run against references (RE2 and Python agree on this pattern: no lookaround, no backrefs).
    (spore_rule,) = rules[".spec.spore"]
    ctx.ok(not re.search(r"\(\?[=!<]|\\[1-9]", spore_rule["rule"]), "the spore pattern is RE2-compatible")
    for ref in SPORE_OK:
        ctx.ok(cel.evaluate(spore_rule["rule"], ref), "spore reference %r is accepted" % ref)
    for ref in SPORE_BAD:
        ctx.ok(not cel.evaluate(spore_rule["rule"], ref), "spore reference %r is refused" % ref)

    examples_dir = os.path.join(ctx.src, "operator-crd", "examples")
    examples = sorted(os.listdir(examples_dir))
    ctx.ok({"minimal.yaml", "full.yaml"} <= set(examples), "minimal and full examples exist: %s" % examples)
    loaded = {}
    for name in examples:
        with open(os.path.join(examples_dir, name)) as f:
            obj = yaml.safe_load(f)
        ctx.ok(obj["apiVersion"] == "sporelet.ai/v1alpha1" and obj["kind"] == "Sporelet", "%s is a Sporelet" % name)
        errs = k8s_schema.validate(schema, obj)
        ctx.ok(not errs, "example %s validates against the CRD: %s" % (name, errs))
        loaded[name] = obj
    full = loaded["full.yaml"]
    # The full example really is full: every spec field the schema has is set.
    for key in schema["properties"]["spec"]["properties"]:
        ctx.ok(key in full["spec"], "full.yaml sets spec.%s" % key)
    for key in schema["properties"]["spec"]["properties"]["template"]["properties"]:
        ctx.ok(key in full["spec"]["template"], "full.yaml sets spec.template.%s" % key)

    # Defaults: hostnamePattern {name}-{index}, replicas 1.
    defaulted = k8s_schema.apply_defaults(schema, {"spec": {"spore": "x", "fork": {}}})
    ctx.ok(defaulted["spec"]["replicas"] == 1 and defaulted["spec"]["fork"]["hostnamePattern"] == "{name}-{index}",
           "defaults: %s" % defaulted)

    good_status = {"observedGeneration": 3, "resolvedDigest": "sha256:" + "c" * 64, "replicas": 3, "readyReplicas": 2,
                   "selector": "sporelet.ai/name=inference",
                   "conditions": [{"type": "Ready", "status": "False", "reason": "ReplicasNotReady",
                                   "message": "2 of 3 ready", "lastTransitionTime": "2024-06-01T10:00:00Z",
                                   "observedGeneration": 3},
                                  {"type": "Resolved", "status": "True", "reason": "Resolved", "message": "",
                                   "lastTransitionTime": "2024-06-01T09:59:00Z"}]}
    with_status = dict(full, status=good_status)
    errs = k8s_schema.validate(schema, with_status)
    ctx.ok(not errs, "a full status validates: %s" % errs)

    negatives = [
        ("replicas -1", broken(full, "spec.replicas", -1), "replicas must be 0 or more"),
        ("replicas a string", broken(full, "spec.replicas", "3"), "is not of type 'integer'"),
        ("no spore", broken(full, "spec.spore", None), "'spore' is a required property"),
        ("no spec", {"apiVersion": "sporelet.ai/v1alpha1", "kind": "Sporelet", "metadata": {"name": "x"}}, "'spec' is a required property"),
        ("upper-case repository", broken(full, "spec.spore", "reg.example/Spores/x:v1"), "spore must be an image reference"),
        ("short digest", broken(full, "spec.spore", "reg.example/x@sha256:abcd"), "spore must be an image reference"),
        ("unknown spec field", broken(full, "spec.image", "x"), "Additional properties are not allowed ('image'"),
        ("unknown template field", broken(full, "spec.template.hostNetwork", True), "Additional properties are not allowed"),
        ("hostname without index", broken(full, "spec.fork.hostnamePattern", "{name}-worker"), "must contain {index}"),
        ("hostname upper case", broken(full, "spec.fork.hostnamePattern", "Web-{index}"), "must give a DNS-1123 label"),
        ("hostname unknown placeholder", broken(full, "spec.fork.hostnamePattern", "{namespace}-{index}"), "must give a DNS-1123 label"),
        ("hostname ends in dash", broken(full, "spec.fork.hostnamePattern", "{index}-"), "must give a DNS-1123 label"),
        ("hostname too long", broken(full, "spec.fork.hostnamePattern", "a" * 60 + "{index}"), "is too long"),
        ("per-replica unknown placeholder", broken(full, "spec.fork.env.0.value", "{replica}"), "only the placeholders"),
        ("per-replica env without value", broken(full, "spec.fork.env.0", {"name": "X"}), "exactly one of value and values"),
        ("per-replica value and values", broken(full, "spec.fork.env.0", {"name": "X", "value": "a", "values": ["b"]}),
         "exactly one of value and values"),
        ("per-replica empty values", broken(full, "spec.fork.env.0", {"name": "X", "values": []}), "too short"),
        ("name not a DNS label", broken(full, "metadata.name", "web.v2"), "must be a DNS-1123 label"),
        ("per-replica name clashes with env", broken(full, "spec.fork.env.0.name", "MODEL_PATH"), "must not also be in spec.env"),
        ("value and valueFrom", broken(full, "spec.env.0.valueFrom", {"fieldRef": {"fieldPath": "metadata.name"}}), "either value or valueFrom"),
        ("two sources", broken(full, "spec.env.1.valueFrom.secretKeyRef", {"name": "s", "key": "k"}), "exactly one of"),
        ("no source", broken(full, "spec.env.1.valueFrom", {}), "exactly one of"),
        ("env name with a digit first", broken(full, "spec.env.0.name", "1X"), "not starting with a digit"),
        ("duplicate env name", broken(full, "spec.env.1.name", "MODEL_PATH"), "duplicate entry"),
        ("bad quantity", broken(full, "spec.resources.limits.memory", "2 GiB"), "does not match"),
        ("operator label", broken(full, "spec.template.labels", {"sporelet.ai/replica": "0"}), "labels under sporelet.ai/"),
        ("operator annotation", broken(full, "spec.template.annotations", {"sporelet.ai/spore": "/x"}), "annotations under sporelet.ai/"),
        ("Exists with a value", broken(full, "spec.template.tolerations.0.value", "x"), "operator Exists has no value"),
        ("tolerationSeconds without NoExecute", broken(full, "spec.template.tolerations.0.tolerationSeconds", 5), "needs effect NoExecute"),
        ("bad toleration operator", broken(full, "spec.template.tolerations.0.operator", "In"), "is not one of"),
        ("command too long", broken(full, "spec.command", ["x"] * 65), "is too long"),
        ("ready above replicas", broken(with_status, "status.readyReplicas", 4), "readyReplicas cannot exceed replicas"),
        ("bad digest", broken(with_status, "status.resolvedDigest", "sha256:xyz"), "resolvedDigest is sha256:"),
        ("bad condition status", broken(with_status, "status.conditions.0.status", "Maybe"), "is not one of"),
        ("condition without reason", broken(with_status, "status.conditions.0.reason", None), "'reason' is a required property"),
        ("duplicate condition", broken(with_status, "status.conditions.1.type", "Ready"), "duplicate entry"),
    ]
    for label, obj, want in negatives:
        errs = k8s_schema.validate(schema, obj)
        ctx.ok(any(want in e for e in errs), "%s is refused with %r: %s" % (label, want, errs))
    # And the accepted edge cases.
    for label, obj in [
        ("replicas 0", broken(full, "spec.replicas", 0)),
        ("hostname only index", broken(full, "spec.fork.hostnamePattern", "{index}")),
        ("hostname with literal prefix", broken(full, "spec.fork.hostnamePattern", "w0-{name}-{index}-x")),
        ("empty per-replica value", broken(full, "spec.fork.env.0.value", "")),
        ("integer quantity", broken(full, "spec.resources.limits.cpu", 2)),
        ("affinity kept as written", broken(full, "spec.template.affinity.nodeAffinity", {"anything": {"goes": [1]}})),
    ]:
        errs = k8s_schema.validate(schema, obj)
        ctx.ok(not errs, "%s is accepted: %s" % (label, errs))


def test_crd_doc(ctx):
    need_yaml()
    gen = os.path.join(ctx.src, "scripts", "gen-crd-doc.py")
    doc = os.path.join(ctx.src, "docs", "crd-reference.md")
    p = subprocess.run([sys.executable, gen, "--crd", ctx.crd_path], capture_output=True, text=True, timeout=60)
    ctx.ok(p.returncode == 0, "gen-crd-doc.py runs: %s" % p.stderr)
    with open(doc) as f:
        current = f.read()
    ctx.ok(p.stdout == current, "docs/crd-reference.md is up to date (run: python3 scripts/gen-crd-doc.py > docs/crd-reference.md)")
    for s in ("`spec.spore`", "`spec.fork.hostnamePattern`", "`status.conditions[].type`", "replicas must be 0 or more"):
        ctx.ok(s in current, "the reference documents %s" % s)
    # It must notice a change: a CRD with one description edited gives a different document.
    with open(ctx.crd_path) as f:
        text = f.read()
    changed = os.path.join(ctx.tmp, "changed.yaml")
    with open(changed, "w") as f:
        f.write(text.replace("How many forked pods to run", "How many pods to run"))
    p = subprocess.run([sys.executable, gen, "--crd", changed], capture_output=True, text=True, timeout=60)
    ctx.ok(p.returncode == 0 and p.stdout != current and "How many pods to run" in p.stdout, "the generator follows the CRD")


TESTS = {
    "build-renderer": test_build_renderer,
    "render": test_render,
    "values": test_values,
    "crd": test_crd,
    "crd-doc": test_crd_doc,
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("test", choices=sorted(TESTS))
    ap.add_argument("--renderer", help="path of the renderer binary")
    ap.add_argument("--gocache", default=os.path.join(tempfile.gettempdir(), "sporelet-chart-gocache"))
    ap.add_argument("--source", default=os.path.join(HERE, "..", ".."))
    args = ap.parse_args()
    ctx = Ctx(args)
    try:
        TESTS[args.test](ctx)
    except Skipped as e:
        print("SKIP: %s" % e)
        return SKIP
    except Failed as e:
        print("FAIL: %s" % e)
        return 1
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        # A rendered object without a field the checks expect.
        import traceback
        traceback.print_exc()
        print("FAIL: unexpected shape (%s: %s)" % (type(e).__name__, e))
        return 1
    finally:
        shutil.rmtree(ctx.tmp, ignore_errors=True)
    print("PASS: %s (%d checks)" % (args.test, ctx.checks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
