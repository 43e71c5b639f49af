#!/usr/bin/env python3
"""Checks proto/ against containerd's own definitions, field by field.

Our .proto files are written from the wire facts, not copied; this test is
what keeps them honest. It compiles both sets with protoc into descriptor
sets and fails on any difference in a field's number, type, label or message
type, in an enum value, or in a service's methods. The upstream sources come
from Debian's golang-github-containerd-containerd-dev (containerd 1.6) and the
packages it depends on; the ttrpc envelope has no .proto upstream at that
version, so it is checked against the struct tags of ttrpc's types.go.

Exit status: 0 pass, 1 mismatch, 77 skip (upstream sources or tools missing).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

SKIP = 77
GOSRC = "/usr/share/gocode/src"
CTRD = "github.com/containerd/containerd"

# Upstream files holding what we define (import paths under GOSRC).
UPSTREAM_FILES = [
    CTRD + "/api/types/mount.proto",
    CTRD + "/api/types/task/task.proto",
    CTRD + "/runtime/v2/task/shim.proto",
    CTRD + "/api/events/task.proto",
    CTRD + "/api/services/ttrpc/events/v1/events.proto",
    CTRD + "/api/services/snapshots/v1/snapshots.proto",
    CTRD + "/pkg/runtimeoptions/v1/api.proto",
    "github.com/containerd/cgroups/v2/stats/metrics.proto",
    "github.com/gogo/googleapis/google/rpc/status.proto",
]
TTRPC_TYPES_GO = GOSRC + "/github.com/containerd/ttrpc/types.go"

# Our name -> the name the same message has in containerd 1.6. Envelope moved
# to containerd.types in 2.0 with unchanged tags.
ALIASES = {
    ".containerd.types.Envelope": ".containerd.services.events.ttrpc.v1.Envelope",
}

# Fields we define that containerd 1.6 lacks, each with the reason.
EXTRA_OK = {
    ("runtimeoptions.v1.Options", "config_body"): "added in containerd 2.0 (field 3, bytes)",
}

# Messages we may define partially (we fill only what cgroup v2 files give).
PARTIAL_OK_PREFIXES = ("io.containerd.cgroups.v2.",)


def skip(reason):
    print("SKIP: " + reason)
    sys.exit(SKIP)


def strip_gogo(text):
    """Drops gogoproto and containerd plugin options, which only steer Go
    code generation and would need their own .proto files."""
    text = re.sub(r'^\s*import\s+(weak\s+)?"[^"]*(gogo|fieldpath)\.proto"\s*;', "", text, flags=re.M)
    text = re.sub(r"^\s*option\s*\([^)]*\)[^;]*;", "", text, flags=re.M)
    text = re.sub(r"\[\s*\((gogoproto|containerd)\.[^\]]*\]", "", text)
    return text


def stage_upstream(tmp):
    """Copies the upstream files and their non-Google imports into tmp, with
    the gogo options stripped. Returns the staged file list."""
    todo = list(UPSTREAM_FILES)
    seen = set()
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        src = os.path.join(GOSRC, rel)
        if not os.path.exists(src):
            skip("upstream proto %s is missing (install golang-github-containerd-containerd-dev)" % src)
        with open(src) as f:
            text = strip_gogo(f.read())
        dst = os.path.join(tmp, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "w") as f:
            f.write(text)
        for imp in re.findall(r'^\s*import\s+(?:weak\s+|public\s+)?"([^"]+)"', text, flags=re.M):
            if not imp.startswith("google/protobuf/"):
                todo.append(imp)
    # status.proto is imported as google/rpc/status.proto by nothing upstream
    # here, so its import path can stay as staged.
    return sorted(seen)


def descriptor_set(protoc, includes, files, out):
    cmd = [protoc, "--include_imports", "--descriptor_set_out=" + out]
    cmd += ["-I" + i for i in includes] + list(files)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print("protoc failed: %s\n%s" % (" ".join(cmd), r.stderr))
        sys.exit(1)
    from google.protobuf import descriptor_pb2
    fds = descriptor_pb2.FileDescriptorSet()
    with open(out, "rb") as f:
        fds.ParseFromString(f.read())
    return fds


def index(fds, primary_files=None):
    """Messages (nested ones included), enums and services by full name.
    primary_files limits the result to those files (not their imports)."""
    msgs, enums, svcs = {}, {}, {}

    def walk_msg(prefix, m):
        name = prefix + "." + m.name
        msgs[name] = m
        for n in m.nested_type:
            walk_msg(name, n)
        for e in m.enum_type:
            enums[name + "." + e.name] = e

    for f in fds.file:
        if primary_files is not None and f.name not in primary_files:
            continue
        pkg = "." + f.package if f.package else ""
        for m in f.message_type:
            walk_msg(pkg, m)
        for e in f.enum_type:
            enums[pkg + "." + e.name] = e
        for s in f.service:
            svcs[pkg + "." + s.name] = s
    return msgs, enums, svcs


def alias(name):
    return ALIASES.get(name, name)


def field_sig(fd, mapper=lambda n: n):
    from google.protobuf import descriptor_pb2 as d
    t = d.FieldDescriptorProto.Type.Name(fd.type)
    lab = d.FieldDescriptorProto.Label.Name(fd.label)
    return (fd.number, t, lab, mapper(fd.type_name) if fd.type_name else "")


def compare_descriptors(ours, theirs, problems):
    o_msgs, o_enums, o_svcs = ours
    u_msgs, u_enums, u_svcs = theirs
    checked_fields = 0
    for oname, om in sorted(o_msgs.items()):
        uname = alias(oname)
        short = oname.lstrip(".")
        if uname not in u_msgs:
            problems.append("message %s does not exist upstream" % short)
            continue
        um = u_msgs[uname]
        ufields = {f.name: f for f in um.field}
        unums = {f.number: f for f in um.field}
        for of in om.field:
            if (short, of.name) in EXTRA_OK:
                if of.name in ufields:
                    problems.append("%s.%s is listed as an extra but exists upstream" % (short, of.name))
                continue
            uf = ufields.get(of.name)
            if uf is None:
                other = unums.get(of.number)
                problems.append("%s.%s (number %d) does not exist upstream%s" % (
                    short, of.name, of.number,
                    "; upstream number %d is %s" % (of.number, other.name) if other else ""))
                continue
            os_, us_ = field_sig(of, alias), field_sig(uf)
            checked_fields += 1
            if os_ != us_:
                problems.append("%s.%s differs: ours (number, type, label, type_name)=%s, upstream=%s" % (
                    short, of.name, os_, us_))
        # Messages we promise to carry whole must not drop upstream fields.
        if not short.startswith(PARTIAL_OK_PREFIXES):
            onames = {f.name for f in om.field}
            for uf in um.field:
                if uf.name not in onames:
                    problems.append("%s lacks upstream field %s = %d" % (short, uf.name, uf.number))
        # Map entries carry their map_entry option; it must agree.
        if om.options.map_entry != um.options.map_entry:
            problems.append("%s: map_entry differs" % short)
    for oname, oe in sorted(o_enums.items()):
        ue = u_enums.get(alias(oname))
        if ue is None:
            problems.append("enum %s does not exist upstream" % oname.lstrip("."))
            continue
        ov = {v.name: v.number for v in oe.value}
        uv = {v.name: v.number for v in ue.value}
        if ov != uv:
            problems.append("enum %s differs: ours %s, upstream %s" % (oname.lstrip("."), ov, uv))
    for oname, os_ in sorted(o_svcs.items()):
        us = u_svcs.get(oname)
        if us is None:
            problems.append("service %s does not exist upstream" % oname.lstrip("."))
            continue
        om = {m.name: (alias(m.input_type), alias(m.output_type), m.client_streaming, m.server_streaming)
              for m in os_.method}
        um = {m.name: (m.input_type, m.output_type, m.client_streaming, m.server_streaming)
              for m in us.method}
        if om != um:
            for name in sorted(set(om) | set(um)):
                if om.get(name) != um.get(name):
                    problems.append("service %s method %s: ours %s, upstream %s" % (
                        oname.lstrip("."), name, om.get(name), um.get(name)))
    return checked_fields


# ttrpc/types.go: `Name Type `protobuf:"kind,number,opt|rep,name=...,proto3"``
GO_TAG = re.compile(r'^\s*\w+\s+(\S+)\s+`protobuf:"(\w+),(\d+),(opt|rep),name=(\w+)')
GO_TYPES = {  # Go field type -> (descriptor type, type_name)
    "string": ("TYPE_STRING", ""),
    "[]string": ("TYPE_STRING", ""),
    "[]byte": ("TYPE_BYTES", ""),
    "int64": ("TYPE_INT64", ""),
    "*spb.Status": ("TYPE_MESSAGE", ".google.rpc.Status"),
    "[]*KeyValue": ("TYPE_MESSAGE", ".ttrpc.KeyValue"),
}


def compare_ttrpc_envelope(o_msgs, problems):
    if not os.path.exists(TTRPC_TYPES_GO):
        problems.append("%s is missing (golang-github-containerd-ttrpc-dev)" % TTRPC_TYPES_GO)
        return 0
    upstream = {}
    current = None
    with open(TTRPC_TYPES_GO) as f:
        for line in f:
            m = re.match(r"^type (\w+) struct", line)
            if m:
                current = upstream.setdefault(".ttrpc." + m.group(1), {})
                continue
            m = GO_TAG.match(line)
            if m and current is not None:
                gotype, _, num, lab, name = m.groups()
                if gotype not in GO_TYPES:
                    problems.append("ttrpc types.go: unexpected Go type %s for %s" % (gotype, name))
                    continue
                t, tn = GO_TYPES[gotype]
                current[name] = (int(num), t, "LABEL_REPEATED" if lab == "rep" else "LABEL_OPTIONAL", tn)
    checked = 0
    ours = {n: m for n, m in o_msgs.items() if n.startswith(".ttrpc.")}
    if not ours:
        problems.append("no ttrpc.* messages in our protos")
    for name, m in sorted(ours.items()):
        uf = upstream.get(name)
        if uf is None:
            problems.append("message %s does not exist in ttrpc types.go" % name.lstrip("."))
            continue
        of = {f.name: field_sig(f) for f in m.field}
        for fname in sorted(set(of) | set(uf)):
            checked += 1
            if of.get(fname) != uf.get(fname):
                problems.append("%s.%s differs: ours %s, ttrpc types.go %s" % (
                    name.lstrip("."), fname, of.get(fname), uf.get(fname)))
    return checked


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", required=True, help="proto/ source dir")
    ap.add_argument("--wkt", required=True, help="dir holding google/protobuf/*.proto")
    ap.add_argument("protos", nargs="+", help="our .proto files, relative to --ours")
    a = ap.parse_args()

    if not os.path.isdir(os.path.join(GOSRC, CTRD)):
        skip("%s/%s not installed (apt-get install golang-github-containerd-containerd-dev)" % (GOSRC, CTRD))
    protoc = shutil.which("protoc")
    if not protoc:
        skip("protoc not installed (apt-get install protobuf-compiler)")
    try:
        import google.protobuf.descriptor_pb2  # noqa: F401
    except ImportError:
        skip("python3 protobuf module not installed (apt-get install python3-protobuf)")

    with tempfile.TemporaryDirectory() as tmp:
        up_dir = os.path.join(tmp, "upstream")
        staged = stage_upstream(up_dir)
        theirs = index(descriptor_set(protoc, [up_dir, a.wkt], [os.path.join(up_dir, s) for s in staged],
                                      os.path.join(tmp, "upstream.pb")))
        ours_fds = descriptor_set(protoc, [a.ours, a.wkt], [os.path.join(a.ours, p) for p in a.protos],
                                  os.path.join(tmp, "ours.pb"))
        ours = index(ours_fds, primary_files=set(a.protos))

    problems = []
    # The ttrpc envelope is checked against Go struct tags, the rest against
    # upstream descriptors.
    o_msgs, o_enums, o_svcs = ours
    rest = ({n: m for n, m in o_msgs.items() if not n.startswith(".ttrpc.")}, o_enums, o_svcs)
    n = compare_descriptors(rest, theirs, problems)
    n += compare_ttrpc_envelope(o_msgs, problems)

    if problems:
        print("FAIL: %d difference(s) between proto/ and upstream:" % len(problems))
        for p in problems:
            print("  " + p)
        return 1
    print("ok: %d messages, %d enums, %d services, %d fields match upstream" % (
        len(o_msgs), len(o_enums), len(o_svcs), n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
