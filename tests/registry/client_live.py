#!/usr/bin/env python3
"""registry-client_live: the registry client's own C tests
(oci-artifact/tests/test_registry_live.c) against real peers started here:
an anonymous docker-registry, the same behind the harness proxy, an
htpasswd-protected one (Basic), and the proxy in Bearer mode.

usage: client_live.py TEST_BINARY
Exit status: 0 pass, 1 fail, 77 skip (docker-registry or htpasswd missing).
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SKIP = 77


def run(binary, what, env_extra):
    env = dict(os.environ, **env_extra)
    print("== %s: %s" % (what, " ".join("%s=%s" % kv for kv in sorted(env_extra.items()))), flush=True)
    p = subprocess.run([binary], env=env, timeout=240)
    if p.returncode != 0:
        print("FAIL registry-client_live: %s: test program exited %d" % (what, p.returncode), flush=True)
        return False
    return True


def main(argv):
    binary = argv[1]
    missing = harness.registry_tools_missing()
    if missing:
        print("SKIP registry-client_live: %s" % missing, flush=True)
        return SKIP
    ok = True
    with harness.Registry() as reg:
        ok &= run(binary, "anonymous registry", {"SPORE_TEST_REGISTRY": reg.host})
        with harness.Proxy(reg) as px:
            ok &= run(binary, "through the proxy", {"SPORE_TEST_REGISTRY": px.host})
        with harness.Proxy(reg, auth="bearer") as px:
            ok &= run(binary, "bearer via the proxy",
                      {"SPORE_TEST_REGISTRY": px.host, "SPORE_TEST_REGISTRY_AUTH": "user:pass"})
    with harness.Registry(auth="basic") as reg:
        ok &= run(binary, "basic (htpasswd)",
                  {"SPORE_TEST_REGISTRY": reg.host, "SPORE_TEST_REGISTRY_AUTH": "user:pass"})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
