#!/usr/bin/env python3
"""The real peer of the gRPC server test: grpcio (grpc-core) calls the test
methods of test_grpc_server.c over a unix socket. Exit 0 when every check
holds; the first failed check is printed and exits 1.

usage: grpc_peer.py SOCKET
"""

import concurrent.futures
import os
import struct
import subprocess
import sys
import time

import grpc

MIB = 1 << 20


def check(cond, msg):
    if not cond:
        print("FAIL: %s" % msg, flush=True)
        sys.exit(1)


OTHER = r"""
import socket, struct, sys
import grpc
sock = sys.argv[1]
# Raw HTTP/2: the server's preface, then GOAWAY naming the rule.
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sock)
try:
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\0\0\0\x04\0\0\0\0\0")
except OSError:
    pass
data = b""
while True:
    try:
        c = s.recv(4096)
    except ConnectionResetError:
        break
    if not c:
        break
    data += c
frames = []
while len(data) >= 9:
    n = int.from_bytes(data[:3], "big")
    frames.append((data[3], data[9:9 + n]))
    data = data[9 + n:]
types = [t for t, _ in frames]
if types != [4, 7]:
    print("FAIL: frames to a refused peer: %r" % frames); sys.exit(1)
last, code = struct.unpack(">II", frames[1][1][:8])
if code != 0xc or frames[1][1][8:] != b"spore-snapshotter serves uid 0 and root only":
    print("FAIL: GOAWAY %r" % frames[1][1]); sys.exit(1)
# grpcio: the call fails, no handler runs.
try:
    grpc.insecure_channel("unix:" + sock).unary_unary("/test.Echo/Unary")(b"x", timeout=10)
    print("FAIL: uid 65534 was served"); sys.exit(1)
except grpc.RpcError as e:
    if e.code() != grpc.StatusCode.UNAVAILABLE:
        print("FAIL: uid 65534 got %s" % e.code()); sys.exit(1)
"""


def other_uid(sock):
    """As uid 65534 (the socket is 0666 in a 0755 directory for this):
    refused by the server's uid rule, with a GOAWAY saying so."""
    def drop():
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
    r = subprocess.run([sys.executable, "-c", OTHER, sock], preexec_fn=drop, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=60)
    check(r.returncode == 0, "as uid 65534: %s" % r.stdout)
    print("uid 65534: GOAWAY (INADEQUATE_SECURITY) naming the rule; grpcio sees UNAVAILABLE", flush=True)


def main():
    sock = sys.argv[1]
    opts = [("grpc.max_send_message_length", 32 * MIB), ("grpc.max_receive_message_length", 32 * MIB)]
    ch = grpc.insecure_channel("unix:" + sock, options=opts)
    grpc.channel_ready_future(ch).result(timeout=10)
    unary = ch.unary_unary("/test.Echo/Unary")
    fail = ch.unary_unary("/test.Echo/Fail")
    stream = ch.unary_stream("/test.Echo/Stream")
    slow = ch.unary_unary("/test.Echo/Slow")
    cancelled = ch.unary_unary("/test.Echo/Cancelled")
    ns = ch.unary_unary("/test.Echo/Ns")

    check(unary(b"hello", timeout=10) == b"hello", "unary echo")
    check(unary(b"", timeout=10) == b"", "empty message")
    big = bytes(range(256)) * (10 * MIB // 256)
    check(unary(big, timeout=60) == big, "10 MiB each way (flow control, many DATA frames)")
    print("unary: small, empty, 10 MiB", flush=True)

    for code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION):
        try:
            fail(bytes([code.value[0]]), timeout=10)
            check(False, "Fail returned OK")
        except grpc.RpcError as e:
            check(e.code() == code, "status %s, want %s" % (e.code(), code))
            check(e.details() == "fail: 100% \u00fcnicode\nand a newline", "details %r" % e.details())
    print("errors: codes and percent-encoded messages", flush=True)

    got = [m for m in stream(struct.pack(">I", 1000), timeout=30)]
    check(got == [b"msg-%d" % i for i in range(1000)], "1000 streamed messages (%d)" % len(got))
    check(list(stream(struct.pack(">I", 0), timeout=10)) == [], "an empty stream")
    try:
        list(stream(b"x", timeout=10))
        check(False, "a bad stream request succeeded")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.INVALID_ARGUMENT, "stream error %s" % e.code())
    print("server streaming: 1000 messages, empty, error", flush=True)

    try:
        ch.unary_unary("/test.Echo/Nope")(b"", timeout=10)
        check(False, "unknown method succeeded")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.UNIMPLEMENTED and "/test.Echo/Nope" in e.details(),
              "unknown method: %s %s" % (e.code(), e.details()))
    check(ns(b"", metadata=(("containerd-namespace", "k8s.io"),), timeout=10) == b"k8s.io", "namespace header")
    check(ns(b"", timeout=10) == b"(none)", "no namespace header")
    print("unknown method: UNIMPLEMENTED; containerd-namespace metadata", flush=True)

    # A call that blocks never delays others on the same connection; its
    # deadline resets the stream and the handler sees the cancellation.
    with concurrent.futures.ThreadPoolExecutor(max_workers=24) as ex:
        t0 = time.monotonic()
        f_slow = ex.submit(lambda: slow(b"", timeout=1.5))
        quick = [ex.submit(unary, b"q%d" % i, timeout=10) for i in range(20)]
        for i, f in enumerate(quick):
            check(f.result() == b"q%d" % i, "a quick call beside the slow one")
        check(time.monotonic() - t0 < 1.2, "quick calls waited for the slow one (%.2fs)" % (time.monotonic() - t0))
        try:
            f_slow.result()
            check(False, "slow call returned")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, "slow call: %s" % e.code())
    deadline = time.monotonic() + 5
    while cancelled(b"", timeout=10) != b"y":
        check(time.monotonic() < deadline, "the handler never saw the client's cancellation")
        time.sleep(0.05)
    print("concurrency: 20 calls beside a blocked one; deadline seen as cancellation", flush=True)

    try:
        unary(b"x" * (16 * MIB + 1), timeout=30)
        check(False, "a 16 MiB + 1 request succeeded")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, "oversized request: %s" % e.code())
    check(unary(b"after", timeout=10) == b"after", "the connection works after an oversized request")
    print("16 MiB + 1: RESOURCE_EXHAUSTED, connection kept", flush=True)

    chans = [grpc.insecure_channel("unix:" + sock, options=opts) for _ in range(12)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as ex:
        res = list(ex.map(lambda c: c.unary_unary("/test.Echo/Unary")(b"many", timeout=10), chans))
    check(res == [b"many"] * 12, "12 connections")
    for c in chans:
        c.close()
    print("12 connections at once", flush=True)

    # Request bodies held at once are capped server-wide (64 MiB): four
    # 15 MiB requests to a handler that holds them fit, a fifth does not.
    body = b"h" * (15 * MIB)
    with concurrent.futures.ThreadPoolExecutor(max_workers=5) as ex:
        futs = [ex.submit(slow, body, timeout=15) for _ in range(5)]
        codes = []
        for f in futs:
            try:
                f.result()
                codes.append("OK")
            except grpc.RpcError as e:
                codes.append(e.code())
                if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    check(e.details() == "requests in progress already hold 64 MiB, the server's cap",
                          "over the budget: %r" % e.details())
    check(sorted(codes, key=str) == sorted([grpc.StatusCode.DEADLINE_EXCEEDED] * 4 +
                                           [grpc.StatusCode.RESOURCE_EXHAUSTED], key=str),
          "5 x 15 MiB held at once: %s" % codes)
    check(unary(b"after", timeout=10) == b"after", "the budget is given back")
    print("64 MiB held at once: the fifth 15 MiB request is RESOURCE_EXHAUSTED", flush=True)

    if os.geteuid() == 0:
        other_uid(sock)

    # Not gRPC: plain HTTP/2 with another content type gets HTTP 415.
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2-prior-knowledge",
                        "--unix-socket", sock, "-X", "POST", "-H", "content-type: text/plain", "-d", "x",
                        "http://localhost/test.Echo/Unary"], stdout=subprocess.PIPE, text=True, timeout=30)
    check(r.stdout == "415", "non-gRPC content type: HTTP %r" % r.stdout)
    print("plain HTTP/2 (curl): 415", flush=True)
    ch.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
