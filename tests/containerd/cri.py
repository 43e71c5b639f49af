#!/usr/bin/env python3
"""A CRI client for the tests (the kubelet stand-in): python3-grpcio plus the
wire-compatible CRI subset in cri_api.proto, compiled with protoc at run time
(no grpc-tools code generation: methods are called by their full names).

    with Containerd() as c:
        c.ensure_pause_image()
        c.import_image(busybox_image(), namespace=CRI_NAMESPACE)
        k = CriClient(c)            # waits until CRI answers
        pod = k.run_pod("p1")       # host network, runc handler
        ctr = k.create_container(pod, "sporelet.test/busybox:1", ["echo", "hello"])
        k.start_container(ctr)
        st = k.wait_exit(ctr)       # ContainerStatus message, state EXITED
        assert st.exit_code == 0 and k.log_text(ctr) == "hello\\n"
        k.cleanup()                 # stop and remove every pod (bounded)

Messages are the generated classes of module `api` (k.api.PodSandboxConfig,
...); the helpers return them or small Pod / Container records.
"""

import importlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

from ctrd import CRI_NAMESPACE, HarnessError  # noqa: F401  (re-exported for tests)

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "cri_api.proto")
PROTOC = "/usr/bin/protoc"
RUNTIME = "runtime.v1.RuntimeService"
IMAGES = "runtime.v1.ImageService"

_api = None


class CriError(HarnessError):
    def __init__(self, method, err):
        self.method = method
        self.code = err.code() if hasattr(err, "code") else None
        self.details = err.details() if hasattr(err, "details") else str(err)
        super().__init__("CRI %s failed: %s %s" % (method, self.code, self.details))


def protoc_import(include_dirs, files, module):
    """Compiles .proto files with protoc (python_out) into a temp dir and
    imports module from it; the generated files are removed afterwards (the
    imported modules live on in memory)."""
    if not os.access(PROTOC, os.X_OK):
        raise HarnessError("%s is missing (Debian package protobuf-compiler; run scripts/setup)" % PROTOC)
    out = tempfile.mkdtemp(prefix="pb-")
    try:
        argv = [PROTOC] + [a for d in include_dirs for a in ("-I", d)] + ["--python_out", out] + list(files)
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        if p.returncode != 0:
            raise HarnessError("protoc failed on %s: %s" % (" ".join(files), p.stderr))
        sys.path.insert(0, out)
        try:
            return importlib.import_module(module)
        finally:
            sys.path.remove(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def load_api():
    """Compiles cri_api.proto with protoc into a temp dir and imports it
    (once per process). Returns the module (cri_api_pb2)."""
    global _api
    if _api is not None:
        return _api
    try:
        import google.protobuf  # noqa: F401
        import grpc  # noqa: F401
    except ImportError as e:
        raise HarnessError("%s: the CRI client needs python3-grpcio and python3-protobuf (run scripts/setup; "
                           "this is %s)" % (e, sys.executable))
    _api = protoc_import([HERE], [PROTO], "cri_api_pb2")
    return _api


class Pod:
    def __init__(self, pod_id, config, runtime_handler):
        self.id, self.config, self.runtime_handler = pod_id, config, runtime_handler

    @property
    def name(self):
        return self.config.metadata.name

    @property
    def log_dir(self):
        return self.config.log_directory

    def __repr__(self):
        return "Pod(%s, %s)" % (self.name, self.id[:12])


class Container:
    def __init__(self, cid, pod, config):
        self.id, self.pod, self.config = cid, pod, config

    @property
    def name(self):
        return self.config.metadata.name

    @property
    def log_path(self):
        """The CRI log file on the host (pod log dir + the container's log_path)."""
        return os.path.join(self.pod.log_dir, self.config.log_path)

    def __repr__(self):
        return "Container(%s, %s)" % (self.name, self.id[:12])


def parse_cri_log(data):
    """CRI log lines '<RFC3339Nano> <stdout|stderr> <P|F> <text>' ->
    [(time, stream, text)] with partial (P) lines joined to their end."""
    out, pending = [], {}
    for line in data.splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 3:
            raise HarnessError("malformed CRI log line %r" % line)
        ts, stream, tag = parts[0], parts[1], parts[2]
        text = parts[3] if len(parts) > 3 else ""
        if tag == "P":
            pending[stream] = pending.get(stream, "") + text
            continue
        if tag != "F":
            raise HarnessError("malformed CRI log tag in %r" % line)
        out.append((ts, stream, pending.pop(stream, "") + text))
    for stream, text in pending.items():
        out.append(("", stream, text))
    return out


class CriClient:
    """CRI over the instance's gRPC socket (ctrd.Containerd or a socket path).

    Every call has a deadline (timeout seconds, default 30). Errors raise
    CriError (a HarnessError) carrying the gRPC code."""

    def __init__(self, target, timeout=30, wait=True):
        import grpc
        self.api = load_api()
        self.ctrd = target if hasattr(target, "address") else None
        sock = target.address if self.ctrd else target
        self.socket = sock
        self.timeout = timeout
        self.channel = grpc.insecure_channel("unix://" + sock)
        self.pods = []
        if wait:
            self.wait_ready()

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def call(self, service, method, request, response_cls, timeout=None):
        import grpc
        fn = self.channel.unary_unary("/%s/%s" % (service, method),
                                      request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=response_cls.FromString)
        try:
            return fn(request, timeout=timeout or self.timeout)
        except grpc.RpcError as e:
            raise CriError(method, e) from None

    def rt(self, method, request, timeout=None):
        """RuntimeService.<method>(request): the response class is <method>Response."""
        return self.call(RUNTIME, method, request, getattr(self.api, method + "Response"), timeout)

    def img(self, method, request, timeout=None):
        return self.call(IMAGES, method, request, getattr(self.api, method + "Response"), timeout)

    # -- runtime --
    def version(self, timeout=None):
        return self.rt("Version", self.api.VersionRequest(version="v1"), timeout)

    def status(self, verbose=False):
        return self.rt("Status", self.api.StatusRequest(verbose=verbose))

    def conditions(self):
        """{condition type: (status, reason, message)} (RuntimeReady, NetworkReady)."""
        return {c.type: (c.status, c.reason, c.message) for c in self.status().status.conditions}

    def wait_ready(self, timeout=30):
        """Waits until CRI answers Version (it starts after containerd serves)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                v = self.version(timeout=5)
                if v.runtime_api_version:
                    return v
            except CriError as e:
                last = e
            time.sleep(0.1)
        raise HarnessError("CRI on %s did not answer within %ds: %s" % (self.socket, timeout, last))

    def pod_config(self, name, namespace="default", uid=None, attempt=0, annotations=None, labels=None,
                   host_network=True, log_dir=None, cgroup_parent=None, hostname=""):
        a = self.api
        uid = uid or secrets.token_hex(8)
        if log_dir is None:
            base = self.ctrd.pods_dir if self.ctrd else tempfile.gettempdir()
            log_dir = os.path.join(base, "%s_%s_%s" % (namespace, name, uid))
        if cgroup_parent is None and self.ctrd:
            cgroup_parent = "%s/pod%s" % (self.ctrd.cgroup_parent, uid)
        ns = a.NamespaceOption(network=a.NODE if host_network else a.POD, pid=a.CONTAINER, ipc=a.POD)
        return a.PodSandboxConfig(
            metadata=a.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=attempt),
            hostname=hostname, log_directory=log_dir, labels=labels or {}, annotations=annotations or {},
            linux=a.LinuxPodSandboxConfig(cgroup_parent=cgroup_parent or "",
                                          security_context=a.LinuxSandboxSecurityContext(namespace_options=ns)))

    def run_pod(self, name, runtime_handler="runc", annotations=None, labels=None, host_network=True,
                namespace="default", uid=None, timeout=60, **kw):
        """RunPodSandbox (host network by default: no CNI here). Creates the
        pod log directory as kubelet does. Returns a Pod."""
        cfg = self.pod_config(name, namespace=namespace, uid=uid, annotations=annotations, labels=labels,
                              host_network=host_network, **kw)
        os.makedirs(cfg.log_directory, exist_ok=True)
        r = self.rt("RunPodSandbox", self.api.RunPodSandboxRequest(config=cfg, runtime_handler=runtime_handler),
                    timeout)
        pod = Pod(r.pod_sandbox_id, cfg, runtime_handler)
        self.pods.append(pod)
        return pod

    def pod_status(self, pod, verbose=False):
        pid = pod.id if isinstance(pod, Pod) else pod
        return self.rt("PodSandboxStatus", self.api.PodSandboxStatusRequest(pod_sandbox_id=pid, verbose=verbose))

    def list_pods(self):
        return list(self.rt("ListPodSandbox", self.api.ListPodSandboxRequest()).items)

    def stop_pod(self, pod, timeout=60):
        pid = pod.id if isinstance(pod, Pod) else pod
        self.rt("StopPodSandbox", self.api.StopPodSandboxRequest(pod_sandbox_id=pid), timeout)

    def remove_pod(self, pod, timeout=60):
        pid = pod.id if isinstance(pod, Pod) else pod
        self.rt("RemovePodSandbox", self.api.RemovePodSandboxRequest(pod_sandbox_id=pid), timeout)
        self.pods = [p for p in self.pods if p.id != pid]

    # -- containers --
    def create_container(self, pod, image, args=None, command=None, env=None, annotations=None, labels=None,
                         name=None, log_path=None, working_dir="", mounts=(), privileged=False, attempt=0,
                         timeout=60):
        """CreateContainer in pod: image is a ref; command replaces the
        image's Entrypoint, args its Cmd (Kubernetes semantics); env a dict;
        mounts (host_path, container_path, readonly) tuples; log_path is
        relative to the pod's log dir (default <name>/<attempt>.log)."""
        a = self.api
        name = name or "c%s" % secrets.token_hex(3)
        log_path = log_path or "%s/%d.log" % (name, attempt)
        os.makedirs(os.path.dirname(os.path.join(pod.log_dir, log_path)), exist_ok=True)
        ns = a.NamespaceOption(network=a.NODE if pod.config.linux.security_context.namespace_options.network
                               == a.NODE else a.POD, pid=a.CONTAINER, ipc=a.POD)
        cfg = a.ContainerConfig(
            metadata=a.ContainerMetadata(name=name, attempt=attempt),
            image=a.ImageSpec(image=image),
            command=list(command or []), args=list(args or []), working_dir=working_dir,
            envs=[a.KeyValue(key=k, value=v) for k, v in (env or {}).items()],
            mounts=[a.Mount(host_path=h, container_path=c, readonly=ro) for h, c, ro in mounts],
            labels=labels or {}, annotations=annotations or {}, log_path=log_path,
            linux=a.LinuxContainerConfig(security_context=a.LinuxContainerSecurityContext(
                privileged=privileged, namespace_options=ns)))
        r = self.rt("CreateContainer", a.CreateContainerRequest(pod_sandbox_id=pod.id, config=cfg,
                                                                sandbox_config=pod.config), timeout)
        return Container(r.container_id, pod, cfg)

    def start_container(self, ctr, timeout=60):
        self.rt("StartContainer", self.api.StartContainerRequest(container_id=_cid(ctr)), timeout)

    def stop_container(self, ctr, grace=0, timeout=60):
        self.rt("StopContainer", self.api.StopContainerRequest(container_id=_cid(ctr), timeout=grace), timeout)

    def remove_container(self, ctr, timeout=60):
        self.rt("RemoveContainer", self.api.RemoveContainerRequest(container_id=_cid(ctr)), timeout)

    def container_status(self, ctr, verbose=False):
        return self.rt("ContainerStatus", self.api.ContainerStatusRequest(container_id=_cid(ctr),
                                                                          verbose=verbose)).status

    def list_containers(self, pod=None):
        f = self.api.ContainerFilter(pod_sandbox_id=pod.id if isinstance(pod, Pod) else (pod or ""))
        return list(self.rt("ListContainers", self.api.ListContainersRequest(filter=f)).containers)

    def wait_exit(self, ctr, timeout=30, interval=0.05):
        """Polls ContainerStatus until the container has exited; returns the
        status (exit_code, reason, finished_at...)."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.container_status(ctr)
            if st.state == self.api.CONTAINER_EXITED:
                return st
            if time.monotonic() >= deadline:
                raise HarnessError("container %s (%s) still %s after %ds" % (
                    _cid(ctr)[:12], getattr(ctr, "name", "?"), self.api.ContainerState.Name(st.state), timeout))
            time.sleep(interval)

    def exec_sync(self, ctr, cmd, timeout=30):
        """ExecSync: returns (exit_code, stdout bytes, stderr bytes)."""
        r = self.rt("ExecSync", self.api.ExecSyncRequest(container_id=_cid(ctr), cmd=list(cmd), timeout=timeout),
                    timeout + 10)
        return r.exit_code, r.stdout, r.stderr

    def run_container(self, pod, image, args=None, timeout=60, **kw):
        """create + start + wait for exit; returns (container, status, log text)."""
        c = self.create_container(pod, image, args=args, **kw)
        self.start_container(c)
        st = self.wait_exit(c, timeout=timeout)
        return c, st, self.log_text(c)

    def read_log(self, ctr):
        """The container's CRI log file parsed: [(time, stream, text)]."""
        try:
            with open(ctr.log_path, errors="replace") as f:
                return parse_cri_log(f.read())
        except FileNotFoundError:
            raise HarnessError("CRI log file %s does not exist" % ctr.log_path) from None

    def log_text(self, ctr, stream=None):
        """The container's output (stdout and stderr, or one of them), one
        line per log record, each ending in a newline."""
        return "".join(t + "\n" for _ts, s, t in self.read_log(ctr) if stream in (None, s))

    # -- images --
    def pull_image(self, ref, timeout=180):
        return self.img("PullImage", self.api.PullImageRequest(image=self.api.ImageSpec(image=ref)),
                        timeout).image_ref

    def image_status(self, ref):
        """The Image message, or None when the image is not present."""
        r = self.img("ImageStatus", self.api.ImageStatusRequest(image=self.api.ImageSpec(image=ref)))
        return r.image if r.HasField("image") else None

    def list_images(self):
        return list(self.img("ListImages", self.api.ListImagesRequest()).images)

    # -- teardown --
    def cleanup(self, timeout=60):
        """Stops and removes every pod sandbox and container CRI knows
        (bounded). Returns the problems met (empty when all went well)."""
        problems = []
        deadline = time.monotonic() + timeout
        try:
            pods = self.list_pods()
        except HarnessError as e:
            return ["ListPodSandbox: %s" % e]
        for p in pods:
            left = max(1.0, deadline - time.monotonic())
            for what, fn in (("StopPodSandbox", self.stop_pod), ("RemovePodSandbox", self.remove_pod)):
                try:
                    fn(p.id, timeout=min(left, 60))
                except HarnessError as e:
                    problems.append("%s %s: %s" % (what, p.id[:12], e))
        try:
            for c in self.list_containers():
                problems.append("container %s left after its pod was removed" % c.id[:12])
                try:
                    self.remove_container(c.id, timeout=15)
                except HarnessError as e:
                    problems.append("RemoveContainer %s: %s" % (c.id[:12], e))
        except HarnessError as e:
            problems.append("ListContainers: %s" % e)
        self.pods = []
        return problems


def _cid(ctr):
    return ctr.id if hasattr(ctr, "id") else ctr
