#!/usr/bin/env python3
"""kvm-tier tests of the test guest's agent (docs/testguest.md, "The agent").

usage: agent_tests.py NAME SPORE_BINARY TESTGUEST_ELF

testguest.elf with --vsock gets a virtio-vsock device and answers the agent
protocol (docs/agent-protocol.md) with built-in commands. These tests drive
it through the spore CLI (run/resume/fanout -- COMMAND) and through a raw
client on the VM's vsock socket. Same runner, exit statuses and helpers as
spore_tests.py.
"""

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spore_tests as st  # noqa: E402
from spore_tests import Fail, check  # noqa: E402

HELLO, READY, ERROR, EXEC, STDIN, STDIN_EOF, STDOUT, STDERR, SIGNAL, EXIT, STARTED, GENERATION, SHUTDOWN = (
    0x01, 0x02, 0x03, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x20, 0x21)
E_PROTOCOL, E_VERSION, E_TOO_LARGE, E_STATE, E_EXEC, E_NO_PROCESS, E_BUSY = 1, 2, 3, 4, 5, 6, 7
GEN_RE = re.compile(r"^tg: gen counter=(\d+) id=([0-9a-f]{32})$")


# ---- the wire format ---------------------------------------------------------

def u32(v):
    return struct.pack("<I", v)


def bstr(s):
    b = s.encode() if isinstance(s, str) else s
    return u32(len(b)) + b


def strlist(items):
    return u32(len(items)) + b"".join(bstr(s) for s in items)


def frame(t, payload=b""):
    return struct.pack("<IBBH", len(payload), t, 0, 0) + payload


def exec_msg(pid, argv, env=(), stdin=False):
    return frame(EXEC, u32(pid) + u32(1 if stdin else 0) + u32(0) + u32(0) + bstr("") + strlist(argv) +
                 strlist(list(env)))


def generation_msg(hostname="", env=()):
    return frame(GENERATION, os.urandom(32) + struct.pack("<QI", int(time.time()), 0) + bstr(hostname) +
                 strlist(list(env)))


class Client:
    """One connection to the agent through the VM's vsock socket."""

    def __init__(self, path, deadline_s=20):
        end = time.monotonic() + deadline_s
        last = None
        while True:
            # The agent may not listen yet (or the device holds us while a
            # restored guest handles its transport reset): EOF, retry.
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(10)
                s.connect(path)
                s.sendall(b"CONNECT 1024\n")
                line = b""
                while not line.endswith(b"\n"):
                    c = s.recv(1)
                    if not c:
                        raise OSError("EOF before the OK line")
                    line += c
                check(line.startswith(b"OK "), "vsock answered %r" % line)
                self.s, self.buf, self.started = s, b"", set()
                return
            except OSError as e:
                last = e
                s.close()
                if time.monotonic() > end:
                    raise Fail("could not connect to the agent at %s: %s" % (path, last))
                time.sleep(0.05)

    def send(self, data):
        self.s.sendall(data)

    def recv_frame(self, timeout=10):
        """(type, payload), or None at EOF. STARTED frames are taken here:
        each must come once per process id, before any other frame of it
        (self.started holds the ids seen)."""
        self.s.settimeout(timeout)
        while True:
            if len(self.buf) >= 8:
                n, t = struct.unpack_from("<IB", self.buf)
                if len(self.buf) >= 8 + n:
                    p = self.buf[8:8 + n]
                    self.buf = self.buf[8 + n:]
                    if t == STARTED:
                        i, pid = struct.unpack("<II", p)
                        check(i not in self.started, "a second STARTED for id %d" % i)
                        check(pid == 0, "the test guest has no pids, STARTED says %d" % pid)
                        self.started.add(i)
                        continue
                    if t in (STDOUT, STDERR, EXIT):
                        i = struct.unpack_from("<I", p)[0]
                        check(i in self.started, "frame 0x%02x for id %d before its STARTED" % (t, i))
                        if t == EXIT:
                            self.started.discard(i)
                    return t, p
            try:
                d = self.s.recv(65536)
            except socket.timeout:
                raise Fail("no frame from the agent within %ss" % timeout)
            if not d:
                check(not self.buf, "EOF inside a frame (%d bytes)" % len(self.buf))
                return None
            self.buf += d

    def expect(self, t, what=""):
        f = self.recv_frame()
        check(f is not None and f[0] == t, "%s: want frame type 0x%02x, got %r" % (what, t, f))
        return f[1]

    def hello(self):
        self.send(frame(HELLO, u32(1)))
        check(self.expect(HELLO, "HELLO") == u32(1), "HELLO answer is not version 1")
        check(self.expect(READY, "READY") == u32(0), "READY after HELLO is not reason 0")

    def run(self, pid, argv, env=(), stdin=None):
        """Runs one command alone on the connection: (stdout, stderr, (kind, value))."""
        self.send(exec_msg(pid, argv, env, stdin is not None))
        if stdin is not None:
            for k in range(0, len(stdin), 100000):
                self.send(frame(STDIN, u32(pid) + bstr(stdin[k:k + 100000])))
            self.send(frame(STDIN_EOF, u32(pid)))
        out, err = b"", b""
        while True:
            f = self.recv_frame(timeout=30)
            check(f is not None, "EOF while %s ran" % argv)
            t, p = f
            if t in (STDOUT, STDERR):
                i, n = struct.unpack_from("<II", p)
                check(i == pid and n == len(p) - 8, "bad %s frame %r" % (t, p[:16]))
                if t == STDOUT:
                    out += p[8:]
                else:
                    err += p[8:]
            elif t == EXIT:
                i, kind, value = struct.unpack("<III", p)
                check(i == pid, "EXIT for id %d, want %d" % (i, pid))
                return out, err, (kind, value)
            elif t == ERROR:
                return None, error(p), None
            else:
                raise Fail("unexpected frame 0x%02x while %s ran" % (t, argv))

    def close(self):
        self.s.close()


def error(p):
    code, pid, flags, n = struct.unpack_from("<IIII", p)
    return code, pid, flags, p[16:16 + n].decode()


# ---- VMs ------------------------------------------------------------------------

class VM:
    """spore run|resume in the background, for raw clients."""

    def __init__(self, ctx, args, sock=None):
        self.sock = sock or ctx.path("vm-%d.sock" % len(os.listdir(ctx.tmp)))
        argv = [ctx.spore_bin] + [str(a) for a in args[:1]] + ["--vsock", self.sock] + [str(a) for a in args[1:]]
        self.out_path = ctx.path(os.path.basename(self.sock) + ".out")
        self.o = open(self.out_path, "w")
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.o, stderr=subprocess.STDOUT,
                                  env=ctx.env, cwd=ctx.tmp, start_new_session=True)
        self.argv = argv
        end = time.monotonic() + 30
        while not os.path.exists(self.sock):
            check(self.p.poll() is None, "VM ended early:\n%s" % self.output())
            check(time.monotonic() < end, "no vsock socket after 30s")
            time.sleep(0.02)

    def output(self):
        with open(self.out_path, errors="replace") as f:
            return f.read()

    def wait(self, timeout=30):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise Fail("VM did not end within %ss:\n%s" % (timeout, self.output()))

    def kill(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
        self.o.close()


def with_vm(ctx, args, body, sock=None):
    vm = VM(ctx, args, sock)
    try:
        body(vm)
    except Fail as e:
        vm.kill()
        raise Fail("%s\nVM (%s) output:\n%s" % (e, " ".join(vm.argv), st.indent(vm.output())))
    finally:
        vm.kill()


def run_cmd(ctx, *cmd, extra=(), expect=0):
    return ctx.spore("run", "--kernel", ctx.guest, "--vsock", ctx.path("run.sock"), *extra, "--", *cmd,
                     timeout=60, expect=expect)


def guest_lines_clean(r):
    st.assert_clean(r, r.lines())


# ---- tests -----------------------------------------------------------------------

def test_agent_run(ctx):
    """spore run --vsock -- COMMAND: output, exit status, env, errors."""
    r = run_cmd(ctx, "echo", "hello", "agent world")
    check("hello agent world\n" in r.out, "echo output missing\n%s" % r.describe())
    check("tg: agent listening port=1024 cid=3" in r.lines(), "no agent line\n%s" % r.describe())
    guest_lines_clean(r)
    run_cmd(ctx, "exit", "7", expect=7)
    run_cmd(ctx, "exit", "0", expect=0)
    r = run_cmd(ctx, "env", extra=("--env", "A=1", "--env", "B=two=2"))
    check("A=1\nB=two=2\n" in r.out, "env output\n%s" % r.describe())
    r = run_cmd(ctx, "hostname")
    check("\ntestguest\n" in "\n" + r.out, "default hostname\n%s" % r.describe())
    r = run_cmd(ctx, "generation")
    gid = st.gens(r.lines())[0][1]
    check(gid + "\n" in r.out, "generation prints the guest's id %s\n%s" % (gid, r.describe()))
    r = run_cmd(ctx, "frobnicate", "x", expect=st.EXIT_SPORE_FAILED)
    check("frobnicate" in r.err and "unknown command" in r.err, "unknown command error\n%s" % r.describe())
    r = run_cmd(ctx, "sleep", "x", expect=2)
    check("usage: sleep MS" in r.err, "sleep usage on stderr\n%s" % r.describe())
    # the test kernel's own command line still works, via --cmdline
    r = run_cmd(ctx, "echo", "x", extra=("--cmdline", "mode=idle hz=200"))
    check("tg: boot cpus=1 mem_mib=128 mode=idle hz=200" in r.lines(), "--cmdline\n%s" % r.describe())


def session(vm):
    c = Client(vm.sock)
    c.hello()
    # cat with stdin, large enough for credit flow both ways (several
    # times the device's 128 KiB and the agent's output ring)
    data = os.urandom(700 * 1024)
    out, err, ex = c.run(1, ["cat"], stdin=data)
    check(ex == (0, 0) and out == data and err == b"",
          "cat: exit %r, %d of %d bytes back, equal=%s" % (ex, len(out or b""), len(data), out == data))
    out, err, ex = c.run(2, ["cat"])  # no WANT_STDIN: stdin is /dev/null
    check(ex == (0, 0) and out == b"", "cat without stdin: %r %r" % (out, ex))

    # sleep, with other commands answered meanwhile
    t0 = time.monotonic()
    c.send(exec_msg(3, ["sleep", "1500"]))
    c.send(exec_msg(4, ["echo", "while", "sleeping"]))
    f = c.recv_frame()
    check(f == (STDOUT, u32(4) + bstr("while sleeping\n")), "echo during sleep: %r" % (f,))
    check(c.recv_frame() == (EXIT, u32(4) + u32(0) + u32(0)), "echo EXIT during sleep")
    check(time.monotonic() - t0 < 1.2, "echo was not answered while sleep ran")
    # a second connection is served while the first has a sleeper
    c2 = Client(vm.sock)
    c2.hello()
    out, _, ex = c2.run(4, ["echo", "second"])  # same id, other connection: ids are per connection
    check(out == b"second\n" and ex == (0, 0), "second connection: %r %r" % (out, ex))
    f = c.recv_frame(timeout=10)
    took = time.monotonic() - t0
    check(f == (EXIT, u32(3) + u32(0) + u32(0)), "sleep EXIT: %r" % (f,))
    check(1.4 <= took < 5, "sleep 1500 took %.2fs" % took)

    # SIGNAL ends a sleeper with kind 1
    c.send(exec_msg(5, ["sleep", "60000"]))
    c.send(frame(SIGNAL, u32(5) + u32(15)))
    check(c.recv_frame() == (EXIT, u32(5) + u32(1) + u32(15)), "SIGNAL 15: want EXIT kind 1 value 15")

    # at least 8 processes at once
    for i in range(10, 18):
        c.send(exec_msg(i, ["sleep", "300"]))
    done = set()
    while len(done) < 8:
        t, p = c.recv_frame()
        i, kind, value = struct.unpack("<III", p)
        check(t == EXIT and kind == 0 and value == 0 and 10 <= i < 18, "8 sleepers: %r" % ((t, p),))
        done.add(i)

    # non-fatal errors: busy id, unknown id, stdin without WANT_STDIN, exit status
    c.send(exec_msg(20, ["sleep", "60000"]))
    c.send(exec_msg(20, ["echo"]))
    code, pid, flags, msg = error(c.expect(ERROR, "duplicate id"))
    check((code, pid, flags) == (E_BUSY, 20, 0) and "in use" in msg, "duplicate id: %r" % ((code, pid, flags, msg),))
    c.send(frame(STDIN, u32(20) + bstr("x")))
    code, pid, flags, msg = error(c.expect(ERROR, "stdin closed"))
    check((code, pid, flags) == (E_STATE, 20, 0), "STDIN without WANT_STDIN: %r" % ((code, pid, flags, msg),))
    c.send(frame(STDIN_EOF, u32(99)))
    code, pid, flags, msg = error(c.expect(ERROR, "no process"))
    check((code, pid, flags) == (E_NO_PROCESS, 99, 0), "STDIN_EOF for id 99: %r" % ((code, pid, flags, msg),))
    _, err, st_ = c.run(21, ["nosuchcmd", "a"])
    check(err[0] == E_EXEC and err[1] == 21 and err[2] == 0 and "nosuchcmd" in err[3] and "unknown command" in err[3],
          "unknown command: %r" % (err,))
    _, _, ex = c.run(22, ["exit", "42"])
    check(ex == (0, 42), "exit 42: %r" % (ex,))
    c.send(frame(SIGNAL, u32(20) + u32(9)))
    check(c.recv_frame() == (EXIT, u32(20) + u32(1) + u32(9)), "SIGNAL 9")

    # GENERATION: hostname and env, then EXEC env overrides key by key
    c.send(generation_msg("gen-host", ["G=1", "X=gen"]))
    check(c.expect(READY, "after GENERATION") == u32(1), "READY 1 after GENERATION")
    out, _, _ = c.run(23, ["hostname"])
    check(out == b"gen-host\n", "hostname after GENERATION: %r" % out)
    out, _, _ = c.run(24, ["env"], env=["X=exec", "Y=2"])
    check(out == b"G=1\nX=exec\nY=2\n", "env merge: %r" % out)
    c2.close()
    # SHUTDOWN stops the VM with status 0
    c.send(frame(SHUTDOWN))
    check(vm.wait() == 0, "VM exit status after SHUTDOWN")
    check("tg: agent shutdown" in vm.output(), "no shutdown line")


def test_agent_session(ctx):
    """A raw client: cat with stdin, sleep while others run, signals, 8
    processes, non-fatal errors, GENERATION, two connections, SHUTDOWN."""
    with_vm(ctx, ["run", "--kernel", ctx.guest, "--for", "120s"], session)


def test_agent_protocol(ctx):
    """Protocol violations end the connection with a fatal ERROR; the VM
    keeps serving new connections."""
    def body(vm):
        cases = [
            (b"\xde\xad\xbe\xef" * 4, E_PROTOCOL, "garbage"),
            (frame(HELLO, u32(1))[:5] + b"\x01\x00\x00" + u32(1), E_PROTOCOL, "flags"),
            (struct.pack("<IBBH", (1 << 20) + 1, EXEC, 0, 0), E_TOO_LARGE, "oversize"),
            (exec_msg(1, ["echo"]), E_STATE, "EXEC before HELLO"),
            (frame(HELLO, u32(2)), E_VERSION, "version 2"),
            (frame(HELLO, u32(1) + b"x"), E_PROTOCOL, "trailing bytes"),
        ]
        for data, code, what in cases:
            c = Client(vm.sock)
            c.send(data)
            f = c.recv_frame()
            check(f is not None and f[0] == ERROR, "%s: want ERROR, got %r" % (what, f))
            e = error(f[1])
            check(e[0] == code and e[2] == 1, "%s: want fatal error %d, got %r" % (what, code, e))
            check(c.recv_frame() is None, "%s: the agent did not close after its fatal ERROR" % what)
            c.close()
        # after HELLO: a G->H type, a second HELLO, EXEC id 0, bad strings
        after = [
            (frame(EXIT, u32(1) + u32(0) + u32(0)), E_PROTOCOL, "EXIT from the host"),
            (frame(HELLO, u32(1)), E_STATE, "second HELLO"),
            (exec_msg(0, ["echo"]), E_PROTOCOL, "EXEC id 0"),
            (frame(EXEC, u32(1) + u32(0) * 3 + bstr("") + u32(1) + bstr(b"ec\0ho") + u32(0)), E_PROTOCOL, "NUL"),
            (exec_msg(1, ["echo"], env=["NOEQUALS"]), E_PROTOCOL, "env entry"),
            (frame(SIGNAL, u32(1) + u32(65)), E_PROTOCOL, "signal 65"),
        ]
        for data, code, what in after:
            c = Client(vm.sock)
            c.hello()
            c.send(data)
            e = error(c.expect(ERROR, what))
            check(e[0] == code and e[2] == 1, "%s: want fatal error %d, got %r" % (what, code, e))
            check(c.recv_frame() is None, "%s: no close after the fatal ERROR" % what)
            c.close()
        c = Client(vm.sock)
        c.hello()
        out, _, ex = c.run(1, ["echo", "still", "serving"])
        check(out == b"still serving\n" and ex == (0, 0), "after violations: %r %r" % (out, ex))
        c.close()
    with_vm(ctx, ["run", "--kernel", ctx.guest, "--for", "120s"], body)


def test_agent_fork(ctx):
    """Capture with the agent ready; resumed copies and fanout children each
    get their own vsock socket and generation, hostname and env."""
    sp = ctx.path("sp")
    r = ctx.spore("run", "--kernel", ctx.guest, "--vsock", ctx.path("cap.sock"), "--capture", sp,
                  "--capture-on", "ready", "--", "echo", "warm", timeout=120, expect=0)
    check("warm\n" in r.out, "warm-up output\n%s" % r.describe())
    parent = st.gens(r.lines())[0][1]
    mach = st.manifest(sp)["machine"]
    check(mach.get("vsock_cid") == 3 and "platform" not in mach, "manifest machine %r" % mach)
    ids = []
    for k in range(2):
        r = ctx.spore("resume", sp, "--hostname", "copy%d" % k, "--env", "K=v%d" % k, "--", "generation",
                      timeout=60, expect=0)
        guest_lines_clean(r)
        m = [ln for ln in r.out.splitlines() if re.fullmatch(r"[0-9a-f]{32}", ln)]
        check(len(m) == 1, "one generation line\n%s" % r.describe())
        g = st.gens(r.lines())
        check(g and g[0] == (1, m[0]), "agent's id %s is not the announced one %s\n%s" % (m[0], g, r.describe()))
        ids.append(m[0])
        r = ctx.spore("resume", sp, "--hostname", "copy%d" % k, "--env", "K=v%d" % k, "--", "env",
                      timeout=60, expect=0)
        check("K=v%d\n" % k in r.out, "GENERATION env in a resumed copy\n%s" % r.describe())
        r = ctx.spore("resume", sp, "--hostname", "copy%d" % k, "--", "hostname", timeout=60, expect=0)
        check("copy%d\n" % k in r.out, "hostname in a resumed copy\n%s" % r.describe())
    check(len({parent, *ids}) == 3, "generation ids must differ: parent %s, copies %s" % (parent, ids))
    ctx.spore("resume", sp, "--", "exit", "5", timeout=60, expect=5)

    # fork + fanout -- COMMAND: each child runs it with its name as hostname
    f = ctx.path("forks")
    ctx.spore("fork", sp, "--count", 2, "--out", f, timeout=60, expect=0)
    r = ctx.spore("fanout", f, "--parallel", "--", "generation", timeout=120, expect=0)
    got = {}
    for ln in r.out.splitlines():
        m = re.fullmatch(r"(child-\d+)\| ([0-9a-f]{32})", ln)
        if m:
            got[m.group(1)] = m.group(2)
    check(sorted(got) == ["child-01", "child-02"], "fanout generation lines %r\n%s" % (got, r.describe()))
    allids = [parent] + ids + list(got.values())
    check(len(set(allids)) == len(allids), "fanout children share a generation id: %r" % allids)
    r = ctx.spore("fanout", f, "--", "hostname", timeout=120, expect=0)
    for name in ("child-01", "child-02"):
        check("%s| %s\n" % (name, name) in r.out, "fanout hostname of %s\n%s" % (name, r.describe()))


def test_agent_refuse(ctx):
    """Without a vsock device there is no agent: commands are refused with a
    clear message, and the plain test guest is unchanged."""
    sp = ctx.path("plain")
    r, _ = st.boot_capture(ctx, sp)
    check("tg: agent" not in r.out, "an agent without --vsock\n%s" % r.describe())
    check("vsock_cid" not in st.manifest(sp)["machine"], "plain spore records a vsock device")
    r = ctx.spore("resume", sp, "--", "echo", "hi", timeout=60, expect=st.EXIT_SPORE_FAILED)
    check("without a vsock device" in r.err and "no agent" in r.err, "resume -- CMD refusal\n%s" % r.describe())
    r = ctx.spore("resume", sp, "--hostname", "h", timeout=60, expect=st.EXIT_SPORE_FAILED)
    check("without a vsock device" in r.err, "resume --hostname refusal\n%s" % r.describe())
    r = ctx.spore("run", "--kernel", ctx.guest, "--env", "A=1", "--", "mode=idle", timeout=60,
                  expect=st.EXIT_SPORE_FAILED)
    check("--vsock PATH" in r.err, "run --env without --vsock\n%s" % r.describe())
    r = ctx.spore("run", "--kernel", ctx.guest, "--vsock", ctx.path("x.sock"), "--hostname", "h", "--", "echo",
                  timeout=60, expect=st.EXIT_SPORE_FAILED)
    check("--hostname is for a resumed spore" in r.err, "run --hostname\n%s" % r.describe())
    f = ctx.path("forks")
    ctx.spore("fork", sp, "--count", 1, "--out", f, timeout=60, expect=0)
    r = ctx.spore("fanout", f, "--", "echo", timeout=60, expect=st.EXIT_SPORE_FAILED)
    check("without a vsock device" in r.err, "fanout -- CMD refusal\n%s" % r.describe())


def connect_as(path, uid, line=b"CONNECT 1024\n", kind=socket.SOCK_STREAM):
    """A child process that becomes uid (groups dropped), connects to path
    and sends line: "EACCES" if connect was refused by the file system, else
    every byte it read until EOF (or a reset), or the OK line (a stream), or
    the first message (a SOCK_SEQPACKET control socket)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            s = socket.socket(socket.AF_UNIX, kind)
            s.settimeout(10)
            try:
                s.connect(path)
            except PermissionError:
                os.write(w, b"EACCES")
                os._exit(0)
            try:
                s.sendall(line)
            except OSError:
                pass  # refused before it was read: the reply may still be there
            if kind == socket.SOCK_SEQPACKET:
                try:
                    os.write(w, s.recv(4096))
                except ConnectionResetError:
                    # A seqpacket socket reports the reset before the reply
                    # when the server closed with our request unread.
                    os.write(w, b"ECONNRESET")
                code = 0
                os._exit(0)
            data = b""
            while not (data.startswith(b"OK ") and data.endswith(b"\n")):
                try:
                    c = s.recv(4096)
                except ConnectionResetError:
                    break
                if not c:
                    break
                data += c
            os.write(w, data)
            code = 0
        except BaseException as e:
            os.write(2, ("client as uid %d: %r\n" % (uid, e)).encode())
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    check(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0,
          "client as uid %d ended with status %#x" % (uid, status))
    return data


def open_dir(ctx, mode=0o755):
    """A directory every uid can enter (ctx.tmp is root's 0700)."""
    d = tempfile.mkdtemp(prefix="spore-kvm-peer-")
    os.chmod(d, mode)
    ctx.cleanup.append(d)
    return d


def test_agent_peer(ctx):
    """The vsock socket is the guest's root shell: only root and the VMM's
    uid are served (SO_PEERCRED), also once the socket's mode would let
    anyone connect; the same for the control socket; after --jail-uid the
    VMM's new uid is the one served;
    --vsock in a directory others could write is refused; the private
    directory the VMM makes is 0700."""
    if os.geteuid() != 0:
        print("SKIP kvm-agent_peer: needs root (clients run as other uids)")
        sys.exit(st.SKIP)
    d = open_dir(ctx)
    sock = os.path.join(d, "vm.sock")
    ctl = os.path.join(d, "ctl.sock")

    def control_peers(served, refused, euid):
        """The control socket (SOCK_SEQPACKET), opened up to everyone: the
        VMM's own rule is what refuses."""
        os.chmod(ctl, 0o666)
        for uid in served:
            got = connect_as(ctl, uid, b"status", socket.SOCK_SEQPACKET)
            check(got.startswith(b"ok state=running"), "control status as uid %d: %r" % (uid, got))
        for uid in refused:
            got = connect_as(ctl, uid, b"status", socket.SOCK_SEQPACKET)
            # The VMM refuses before reading: when "status" was already
            # queued, the kernel reports ECONNRESET instead of the reply.
            check(got in (b"error control socket serves uid %d only" % euid, b"ECONNRESET"),
                  "control as uid %d: %r" % (uid, got))

    def body(vm):
        c = Client(vm.sock)  # the agent is up
        c.hello()
        check(connect_as(vm.sock, 65534) == b"EACCES", "uid 65534 could connect to a 0600 socket")
        os.chmod(vm.sock, 0o666)  # a misconfiguration: the uid check must hold alone
        got = connect_as(vm.sock, 65534)
        check(got == b"ERROR vsock socket serves uid 0 and root only\n", "uid 65534 got %r" % got)
        out, _, ex = c.run(1, ["echo", "still", "mine"])
        check(out == b"still mine\n" and ex == (0, 0), "root after a refusal: %r %r" % (out, ex))
        c.close()
        end = time.monotonic() + 10
        while 'msg="vsock: refused peer uid 65534"' not in vm.output():
            check(time.monotonic() < end, "the refusal was not logged:\n%s" % vm.output())
            time.sleep(0.05)
        check("socket=%s" % vm.sock in vm.output(), "the log line does not name the socket")
        check(connect_as(ctl, 65534, b"status", socket.SOCK_SEQPACKET) == b"EACCES",
              "uid 65534 could connect to the control socket as created")
        control_peers([0], [65534], 0)
    with_vm(ctx, ["run", "--kernel", ctx.guest, "--for", "120s", "--control", ctl], body, sock=sock)

    # Jailed as 65534: the socket was made by root before the jail; from
    # then on 65534 is the VMM's uid, so it is served, 65533 is not, and
    # root (the shim) still is.
    sp = ctx.path("sp")
    ctx.spore("run", "--kernel", ctx.guest, "--vsock", ctx.path("cap.sock"), "--capture", sp, "--capture-on",
              "ready", "--", "echo", "warm", timeout=120, expect=0)
    jsock = os.path.join(d, "jail.sock")

    def jailed(vm):
        Client(vm.sock).close()  # the agent is up (as root)
        os.chmod(vm.sock, 0o666)
        got = connect_as(vm.sock, 65534)
        check(re.fullmatch(rb"OK \d+\n", got), "uid 65534 to a VMM jailed as 65534: %r" % got)
        got = connect_as(vm.sock, 65533)
        check(got == b"ERROR vsock socket serves uid 65534 and root only\n", "uid 65533 got %r" % got)
        c = Client(vm.sock)
        c.hello()
        out, _, ex = c.run(1, ["echo", "root"])
        check(out == b"root\n" and ex == (0, 0), "root to a jailed VMM: %r %r" % (out, ex))
        c.close()
        control_peers([0, 65534], [65533], 65534)
    if os.path.exists(ctl):
        os.unlink(ctl)
    with_vm(ctx, ["resume", sp, "--jail", "--jail-uid", "65534:65534", "--for", "120s", "--control", ctl], jailed,
            sock=jsock)

    # --vsock PATH: the directory, and every one above it, must be root's
    # or ours and not writable by others unless sticky.
    for mode, owner, want in ((0o777, 0, "is writable by others (mode 0777) and not sticky"),
                              (0o775, 0, "is writable by its group (mode 0775)"),
                              (0o755, 65534, "belongs to uid 65534, not to root or uid 0")):
        bad = open_dir(ctx, mode)
        os.chown(bad, owner, owner)
        r = ctx.spore("run", "--kernel", ctx.guest, "--vsock", os.path.join(bad, "x.sock"), "--", "echo", "x",
                      timeout=60, expect=st.EXIT_SPORE_FAILED)
        check(want in r.err and bad in r.err, "--vsock in a %o directory of uid %d\n%s" % (mode, owner, r.describe()))
        check(not os.listdir(bad), "a refused --vsock left a socket behind")
    sticky = open_dir(ctx, 0o1777)
    r = ctx.spore("run", "--kernel", ctx.guest, "--vsock", os.path.join(sticky, "x.sock"), "--", "echo", "sticky",
                  timeout=60, expect=0)
    check("sticky\n" in r.out, "--vsock in a sticky directory\n%s" % r.describe())

    # No --vsock: a private directory of the VMM's own, 0700, socket 0600.
    tmp = open_dir(ctx, 0o700)
    env = ctx.env
    ctx.env = dict(env, TMPDIR=tmp, XDG_RUNTIME_DIR="")
    seen = []

    def look(pid, out):
        for e in os.listdir(tmp):
            p = os.path.join(tmp, e)
            if e.startswith("spore-") and os.path.exists(os.path.join(p, "vsock")) and not seen:
                seen.append((os.stat(p).st_mode & 0o7777, os.stat(os.path.join(p, "vsock")).st_mode & 0o777))
    try:
        ctx.spore_watch("resume", sp, "--", "sleep", "1500", timeout=60, expect=0, poll=look)
    finally:
        ctx.env = env
    check(seen == [(0o700, 0o600)], "private vsock directory and socket modes: %s" % seen)
    check(not os.listdir(tmp), "the private vsock directory was not removed: %s" % os.listdir(tmp))


def pool_request(sock, msg, fds=(), timeout=30):
    """One request to a pool with fds attached: the first reply (text)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(timeout)
    s.connect(sock)
    socket.send_fds(s, [msg], list(fds))
    return s, s.recv(600).decode(errors="replace")


def agent_msg(d, hostname="", env=(), for_ms=0, prefix=""):
    return b"".join(f.encode() + b"\0" for f in ["resume-agent", str(for_ms), prefix, d, hostname] + list(env))


def read_line(fd, timeout=30):
    """One line from a pipe, or what came before its end or the timeout."""
    import select
    end, got = time.monotonic() + timeout, b""
    while not got.endswith(b"\n") and time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], max(0.0, end - time.monotonic()))
        if not r:
            break
        b = os.read(fd, 200)
        if not b:
            break
        got += b
    return got.decode(errors="replace")


def pid_gone(pid, timeout=20):
    """True once pid has exited (gone, or a zombie) within timeout."""
    end = time.monotonic() + timeout
    while True:
        try:
            with open("/proc/%d/stat" % pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            # ENOENT, or ESRCH when it is reaped while we read (seen in CI)
            return True
        if state == "Z":
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.02)


def test_agent_pool(ctx):
    """spore pool --vsock: a resume-agent request restores an agent-capable
    spore into a pre-created VM with a vsock device and drives it like
    `spore resume --vsock --control --ready-fd --parent-fd --hostname --env`:
    the ready line on the passed fd, the reply's control socket answers,
    the reply's vsock socket reaches the agent with the new generation's
    hostname and env, closing the parent pipe (or control stop) ends the VM
    and its private directory; malformed requests, shapes the pool cannot
    serve and the restore form are refused by name."""
    sp = ctx.path("sp")
    ctx.spore("run", "--kernel", ctx.guest, "--vsock", ctx.path("cap.sock"), "--cmdline", "mode=idle",
              "--capture", sp, "--capture-on", "ready", timeout=120, expect=0)
    sock, pidfile = ctx.path("pool.sock"), ctx.path("pool.pid")
    pool = subprocess.Popen([ctx.spore_bin, "pool", "--size", "2", "--socket", sock, "--vsock", "--pid-file", pidfile],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ctx.env,
                            cwd=ctx.tmp, start_new_session=True, text=True)
    conns = []
    try:
        end = time.monotonic() + 20
        while not os.path.exists(pidfile):
            check(pool.poll() is None and time.monotonic() < end, "pool did not start: %s" % pool.poll())
            time.sleep(0.02)
        check(open(pidfile).read() == "%d\n" % pool.pid, "pid file %r" % open(pidfile).read())

        def start(hostname, env=(), console=None):
            rr, rw = os.pipe()
            pr, pw = os.pipe()
            fds = [rw, pr] + ([console] if console is not None else [])
            s, rep = pool_request(sock, agent_msg(sp, hostname, env, prefix="pa: "), fds)
            conns.append(s)
            os.close(rw)
            os.close(pr)
            m = re.fullmatch(r"ok restore_us=(\d+) pid=(\d+) vsock=(\S+) control=(\S+)\n", rep)
            if not m:
                os.close(rr)
                os.close(pw)
                raise Fail("resume-agent reply %r" % rep)
            pid = int(m.group(2))
            ready = read_line(rr)
            os.close(rr)
            check(re.fullmatch(r"ready restore_ms=[0-9.]+\n", ready), "ready line %r" % ready)
            return s, pid, m.group(3), m.group(4), pw

        con_path = ctx.path("console.out")
        with open(con_path, "w") as con:
            s, pid, vsock, control, pw = start("pooled-1", ["GREETING=from-pool", "B=two=2"], con.fileno())
        wdir = os.path.dirname(vsock)
        check(wdir == os.path.join(os.path.realpath(ctx.tmp), "vm-%d" % pid) and os.path.dirname(control) == wdir,
              "worker sockets %s %s" % (vsock, control))
        check(os.stat(wdir).st_mode & 0o777 == 0o700, "worker directory mode %o" % os.stat(wdir).st_mode)
        ppid = int(open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[1])
        check(ppid == pool.pid, "the VMM %d is not a worker of the pool %d (parent %d)" % (pid, pool.pid, ppid))
        r = ctx.spore("control", control, "status", timeout=30, expect=0)
        check(re.match(r"ok state=running pid=%d generation=[0-9a-f]{32} counter=1" % pid, r.out),
              "control status\n%s" % r.describe())
        c = Client(vsock)
        c.hello()
        out, _, ex = c.run(1, ["hostname"])
        check(out == b"pooled-1\n" and ex == (0, 0), "hostname in the pooled VM: %r %r" % (out, ex))
        out, _, ex = c.run(2, ["env"])
        check(b"GREETING=from-pool\nB=two=2\n" in out, "generation env in the pooled VM: %r" % out)
        c.close()
        ctx.spore("control", control, "pause", timeout=30, expect=0)
        ctx.spore("control", control, "resume", timeout=30, expect=0)
        # The supervisor goes away: the VM stops, its directory goes.
        os.close(pw)
        check(pid_gone(pid), "the pooled VM did not stop when its parent pipe closed")
        check(s.recv(600) == b"exit 0\n", "exit reply")
        check(not os.path.exists(wdir), "worker directory %s left" % wdir)
        with open(con_path) as f:
            lines = f.read().splitlines()
        check(lines and all(ln.startswith("pa: tg: ") for ln in lines), "console lines %r" % lines[:5])
        check(any("gen counter=1" in ln for ln in lines), "console shows no new generation: %r" % lines[:5])

        # More requests than workers (used ones are replaced at once); the
        # control socket's stop ends a VM too; no hostname keeps the spore's.
        for k in range(3):
            s, pid, vsock, control, pw = start("")
            c = Client(vsock)
            c.hello()
            out, _, _ = c.run(1, ["hostname"])
            check(out == b"testguest\n", "empty hostname must keep the guest's: %r" % out)
            c.close()
            ctx.spore("control", control, "stop", timeout=30, expect=0)
            check(pid_gone(pid), "control stop did not end the pooled VM")
            check(s.recv(600) == b"exit 0\n", "exit after stop")
            os.close(pw)

        small = ctx.path("small")
        ctx.spore("run", "--kernel", ctx.guest, "--mem", "64", "--vsock", ctx.path("cap2.sock"), "--cmdline",
                  "mode=idle", "--capture", small, "--capture-on", "ready", timeout=120, expect=0)
        plain = ctx.path("plain")
        st.boot_capture(ctx, plain)
        rr, rw = os.pipe()
        pr, pw = os.pipe()
        try:
            for msg, fds, want in (
                    (agent_msg(small), [rw, pr], "error spore needs 1 vcpus and 64 MiB, this VM has 1 and 128"),
                    (agent_msg(plain), [rw, pr], "error spore has vsock CID 0, this VM 3"),
                    (agent_msg(sp), [], "error pool request: resume-agent needs the ready and parent fds"),
                    (agent_msg(sp), [rw], "error pool request: resume-agent needs the ready and parent fds"),
                    (agent_msg(sp), [rr, pr], "error pool request: the ready fd (the first) is not writable"),
                    (agent_msg(sp), [rw, pw], "error pool request: the parent fd (the second) is not readable"),
                    (agent_msg(sp, "bad host"), [rw, pr], "error pool request: hostname must be"),
                    (agent_msg(sp, "h" * 65), [rw, pr], "error pool request: hostname must be"),
                    (agent_msg(sp, "h", ["NOEQUALS"]), [rw, pr], "error pool request: env entry 0: want KEY=VALUE"),
                    (agent_msg(sp, "h", ["=v"]), [rw, pr], "error pool request: env entry 0: want KEY=VALUE"),
                    (agent_msg(sp, "h", ["K=v"] * 65), [rw, pr], "error pool request: more than 64 env entries"),
                    (b"resume-agent\x000\x00\x00" + sp.encode() + b"\x00", [rw, pr],
                     "error pool request: resume-agent wants 5 NUL-terminated fields"),
                    (agent_msg(sp)[:-1], [rw, pr], "error pool request: resume-agent wants 5 NUL-terminated fields"),
                    (agent_msg(sp, for_ms="01"), [rw, pr], "error pool request: bad duration"),
                    (b"restore\x000\x00\x00" + sp.encode() + b"\x00", [],
                     "error pool request: this pool's VMs have a vsock device")):
                s, got = pool_request(sock, msg, fds)
                s.close()
                check(got.startswith("error ") and want[6:] in got, "request %r: reply %r, want %r" %
                      (msg[:60], got, want))
        finally:
            for fd in (rr, rw, pr, pw):
                os.close(fd)
    finally:
        for s in conns:
            s.close()
        pool.send_signal(signal.SIGTERM)
        try:
            _, err = pool.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(pool.pid, signal.SIGKILL)
            pool.communicate()
            raise Fail("pool did not stop on SIGTERM")
    check(pool.returncode == 0, "pool exit status %s on SIGTERM\n%s" % (pool.returncode, err))
    check(not os.path.exists(sock) and not os.path.exists(pidfile), "the pool left its socket or pid file")
    left = [e for e in os.listdir(ctx.tmp) if e.startswith("vm-")]
    check(not left, "worker directories left: %s\n%s" % (left, err))
    check("the supervisor went away" in err, "the parent pipe's end was not logged:\n%s" % err)


st.TESTS.clear()
st.TESTS.update({
    "agent_run": test_agent_run,
    "agent_session": test_agent_session,
    "agent_protocol": test_agent_protocol,
    "agent_fork": test_agent_fork,
    "agent_refuse": test_agent_refuse,
    "agent_pool": test_agent_pool,
    "agent_peer": test_agent_peer,
})

if __name__ == "__main__":
    sys.exit(st.main(sys.argv))
