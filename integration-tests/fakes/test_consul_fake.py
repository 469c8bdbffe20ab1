#!/usr/bin/env python3
"""Checks the fake Consul agent (consul_agent.py) with an independent client, py-consul.

    pip install py-consul
    python3 integration-tests/fakes/test_consul_fake.py

Starts the fake with --token on a free port of 127.0.0.1, runs the checks below (about
25 s), stops the fake by its PID (on failure too), prints each check and a closing
`N passed, N failed` line, and exits non-zero if a check failed.
"""

import http.server
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

try:
    import consul
    from consul import Check
except ImportError:
    sys.exit("py-consul is missing: pip install py-consul")

HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN = "fake-consul-test-token"
NODE = "fake-node-1"
SVC = "hangar-test"
META = {"hangar_role": "storage", "hangar_zone": "z1"}
passed = []


class Failure(Exception):
    pass


def check(what, ok, detail=""):
    if not ok:
        raise Failure(f"{what}: {detail}")
    passed.append(what)
    print(f"ok   {what}", flush=True)


def ids(entries):
    return sorted(e["Service"]["ID"] for e in entries)


def raw(port, method, path, headers=None):
    """A request without py-consul: (status, content type, body)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def in_background(fn):
    """Runs fn in a thread; returns (thread, box) where box gets the result and finish time."""
    box = {}

    def run():
        try:
            box["result"] = fn()
        except Exception as e:  # surfaced by the caller
            box["error"] = e
        box["done"] = time.monotonic()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def blocking_wakeup(c, what, trigger, **query):
    """Starts a blocking health query, fires `trigger`, returns (seconds to wake, new index, entries)."""
    index, _ = c.health.service(SVC, **query)
    t, box = in_background(lambda: c.health.service(SVC, index=index, wait="10s", **query))
    time.sleep(0.3)
    check(f"blocking query (index={index}) is still waiting before {what}", t.is_alive())
    t0 = time.monotonic()
    trigger()
    t.join(5)
    if "error" in box:
        raise box["error"]
    check(f"blocking query answered after {what}", "done" in box, "no answer within 5 s")
    took = box["done"] - t0
    new_index, entries = box["result"]
    check(f"it woke within 1 s ({took * 1000:.0f} ms) with a higher index ({index} -> {new_index})",
          took < 1.0 and int(new_index) > int(index), f"took {took:.3f} s, index {new_index}")
    return took, new_index, entries


def watch(c, pred, timeout, **query):
    """Follows health.service with blocking queries until pred(entries); returns (seconds, entries)."""
    t0, index = time.monotonic(), None
    while True:
        index, entries = c.health.service(SVC, index=index, wait="1s", **query)
        if pred(entries):
            return time.monotonic() - t0, entries
        if time.monotonic() - t0 > timeout:
            raise Failure(f"condition not reached within {timeout} s; last answer {ids(entries)}")


class Probe(http.server.BaseHTTPRequestHandler):
    code = 200   # what the HTTP check target answers

    def do_GET(self):
        body = f"answering {Probe.code}".encode()
        self.send_response(Probe.code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def run_checks(port):
    c = consul.Consul(host="127.0.0.1", port=port, token=TOKEN)

    # ACL
    for label, client in (("no token", consul.Consul(host="127.0.0.1", port=port)),
                          ("a wrong token", consul.Consul(host="127.0.0.1", port=port, token="wrong"))):
        try:
            client.agent.services()
            check(f"{label} is refused", False, "the request succeeded")
        except consul.ACLPermissionDenied as e:
            check(f"{label} is refused with 403 Permission denied (py-consul ACLPermissionDenied)", "Permission denied" in str(e), str(e))
    status, ctype, body = raw(port, "GET", "/v1/health/service/x")
    check("raw request without token: 403, text/plain, body 'Permission denied'",
          status == 403 and ctype.startswith("text/plain") and body == "Permission denied", f"{status} {ctype} {body!r}")
    check("?token= is accepted", raw(port, "GET", f"/v1/agent/services?token={TOKEN}")[0] == 200)
    check("Authorization: Bearer is accepted", raw(port, "GET", "/v1/agent/services", {"Authorization": f"Bearer {TOKEN}"})[0] == 200)

    # agent registration with a TTL check and DeregisterCriticalServiceAfter
    ttl_check = {**Check.ttl("3s"), "DeregisterCriticalServiceAfter": "4s"}
    ok = c.agent.service.register(SVC, service_id="h1", address="127.0.0.1", port=3900, tags=["storage"], meta=META, check=ttl_check)
    check("agent.service.register(h1, TTL 3s, DeregisterCriticalServiceAfter 4s)", ok is True)
    svc = c.agent.services().get("h1", {})
    check("agent.services() shows h1 with its meta, tags and port",
          svc.get("Service") == SVC and svc.get("Meta") == META and svc.get("Tags") == ["storage"] and svc.get("Port") == 3900, svc)
    chk = c.agent.checks().get("service:h1", {})
    check("its check got the default ID service:h1, type ttl, status critical",
          chk.get("Type") == "ttl" and chk.get("Status") == "critical" and chk.get("ServiceID") == "h1", chk)
    check("h1 is not in health.service(passing=True) before a pass", ids(c.health.service(SVC, passing=True)[1]) == [])
    entries = c.health.service(SVC)[1]
    e = entries[0] if entries else {}
    check("health.service() lists h1 with node, serfHealth passing and its critical check",
          ids(entries) == ["h1"] and e["Node"]["Node"] == NODE and e["Node"]["Address"] == "127.0.0.1"
          and [(k["CheckID"], k["Status"]) for k in e["Checks"]] == [("serfHealth", "passing"), ("service:h1", "critical")], e)

    check("agent.check.ttl_pass(service:h1)", c.agent.check.ttl_pass("service:h1", notes="alive") is True)
    entries = c.health.service(SVC, passing=True)[1]
    check("h1 is now passing, with Meta, Port and the note as Output",
          ids(entries) == ["h1"] and entries[0]["Service"]["Meta"] == META and entries[0]["Service"]["Port"] == 3900
          and entries[0]["Checks"][1]["Output"] == "alive", entries)

    # blocking queries wake at once
    h2_check = {**Check.ttl("60s"), "Status": "passing"}
    _, _, entries = blocking_wakeup(c, "another instance registers", lambda: c.agent.service.register(
        SVC, service_id="h2", port=3901, check=h2_check), passing=True)
    check("the answer lists h1 and the new h2", ids(entries) == ["h1", "h2"], ids(entries))
    c.agent.check.ttl_pass("service:h1", notes="alive")   # same status and output: no change
    _, _, entries = blocking_wakeup(c, "a check turns warning", lambda: c.agent.check.ttl_warn("service:h2"), passing=True)
    check("warning is not passing: h2 left the passing set", ids(entries) == ["h1"], ids(entries))
    c.agent.check.ttl_pass("service:h1", notes="alive")
    index, _ = c.health.service(SVC)
    t0 = time.monotonic()
    new_index, _ = c.health.service(SVC, index=index, wait="1s")
    took = time.monotonic() - t0
    check(f"without a change a blocking query answers after its wait (1 s: {took:.2f} s), same index",
          0.9 <= took <= 2.0 and new_index == index, f"{took:.2f} s, {index} -> {new_index}")

    # TTL expiry, then DeregisterCriticalServiceAfter
    c.agent.check.ttl_pass("service:h1", notes="last words")
    expired_after, _ = watch(c, lambda es: "h1" not in ids(es), 8, passing=True)
    check(f"h1 left the passing set when its 3 s TTL ran out ({expired_after:.1f} s)", 2.5 <= expired_after <= 4.5)
    out = c.agent.checks()["service:h1"]["Output"]
    check("the expired check's Output is Consul's", out == "TTL expired (last output before timeout follows): last words", out)
    gone_after, _ = watch(c, lambda es: "h1" not in ids(es), 10)
    check(f"h1 was deregistered {gone_after:.1f} s after turning critical (DeregisterCriticalServiceAfter 4s)",
          3.5 <= gone_after <= 6.0)
    check("h1 and its check are gone from the agent and the catalog",
          "h1" not in c.agent.services() and "service:h1" not in c.agent.checks()
          and "h1" not in [s["ServiceID"] for s in c.catalog.service(SVC)[1]])

    # agent deregistration
    check("agent.service.deregister(h2)", c.agent.service.deregister("h2") is True)
    check("h2 is gone from agent.services() and health.service()",
          "h2" not in c.agent.services() and ids(c.health.service(SVC)[1]) == [])
    status, _, body = raw(port, "PUT", "/v1/agent/service/deregister/h2", {"X-Consul-Token": TOKEN})
    check("deregistering it again: 404 Unknown service ID", status == 404 and body.startswith('Unknown service ID "h2"'), f"{status} {body}")
    status, _, body = raw(port, "PUT", "/v1/agent/check/pass/service:h2", {"X-Consul-Token": TOKEN})
    check("passing a check that no longer exists: 404", status == 404, f"{status} {body}")

    # several checks, re-registration
    c.agent.service.register("multi", service_id="m1", check=Check.ttl("60s"), extra_checks=[Check.ttl("60s")])
    check("two unnamed checks get IDs service:m1:1 and service:m1:2",
          sorted(k for k in c.agent.checks() if k.startswith("service:m1")) == ["service:m1:1", "service:m1:2"])
    c.agent.service.register("multi", service_id="m1", tags=["v2"], check=Check.ttl("60s"))
    check("re-registering m1 replaced the service (new tags) and kept the unlisted checks, as Consul does",
          c.agent.services()["m1"]["Tags"] == ["v2"]
          and sorted(k for k in c.agent.checks() if k.startswith("service:m1")) == ["service:m1", "service:m1:1", "service:m1:2"])
    c.agent.service.register("multi", service_id="m1", check=Check.ttl("60s"), replace_existing_checks=True)
    check("replace-existing-checks drops them", sorted(k for k in c.agent.checks() if k.startswith("service:m1")) == ["service:m1"])
    c.agent.service.deregister("m1")

    # catalog
    ext_service = {"Service": SVC, "ID": "ext-1", "Port": 3902, "Tags": ["storage"], "Meta": META}
    ext_check = {"CheckID": "service:ext-1", "Name": "hangar heartbeat", "Status": "passing", "ServiceID": "ext-1"}
    check("catalog.register(ext-node-1, ext-1 passing)",
          c.catalog.register("ext-node-1", "127.0.0.5", service=ext_service, check=ext_check) is True)
    entries = c.catalog.service(SVC)[1]
    check("catalog.service() lists ext-1 on ext-node-1 with its meta and port",
          [(s["Node"], s["Address"], s["ServiceID"], s["ServicePort"], s["ServiceMeta"]) for s in entries]
          == [("ext-node-1", "127.0.0.5", "ext-1", 3902, META)], entries)
    check("catalog.services() lists the service with its tag", c.catalog.services()[1].get(SVC) == ["storage"])
    entries = c.health.service(SVC, passing=True)[1]
    check("health.service(passing=True) lists ext-1, whose node has no serfHealth check",
          ids(entries) == ["ext-1"] and [k["CheckID"] for k in entries[0]["Checks"]] == ["service:ext-1"], entries)
    time.sleep(1.5)
    check("a catalog check is not evaluated: still passing later", ids(c.health.service(SVC, passing=True)[1]) == ["ext-1"])
    _, _, entries = blocking_wakeup(c, "a catalog check is written critical", lambda: c.catalog.register(
        "ext-node-1", "127.0.0.5", service=ext_service, check={**ext_check, "Status": "critical"}), passing=True)
    check("ext-1 left the passing set", ids(entries) == [])
    check("catalog.deregister(ext-node-1, service_id=ext-1)", c.catalog.deregister("ext-node-1", service_id="ext-1") is True)
    nodes = [n["Node"] for n in c.catalog.nodes()[1]]
    check("ext-1 is gone from catalog.service(), its node stays",
          c.catalog.service(SVC)[1] == [] and "ext-node-1" in nodes and NODE in nodes, nodes)
    check("catalog.deregister(ext-node-1) removes the node", c.catalog.deregister("ext-node-1") is True
          and [n["Node"] for n in c.catalog.nodes()[1]] == [NODE])

    # an HTTP check the fake runs itself
    probe = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Probe)
    threading.Thread(target=probe.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{probe.server_address[1]}/health"
    try:
        c.agent.service.register("web-probe", service_id="w1", check=Check.http(url, "1s", timeout="2s"))
        for code, status in ((200, "passing"), (429, "warning"), (500, "critical")):
            Probe.code = code
            deadline = time.monotonic() + 5
            while c.agent.checks()["service:w1"]["Status"] != status and time.monotonic() < deadline:
                time.sleep(0.1)
            got = c.agent.checks()["service:w1"]
            check(f"HTTP check: target answers {code} -> {status}", got["Status"] == status, got)
        check("its Output is Consul's", got["Output"].startswith(f"HTTP GET {url}: 500 Internal Server Error Output: answering 500"), got["Output"])
        c.agent.service.deregister("w1")
    finally:
        probe.shutdown()

    # py-consul sends no token for these two; Consul needs none for status/*, but does for agent/self
    check("status.leader() is 127.0.0.1:8300 (status/* needs no token, as in Consul)", c.status.leader() == "127.0.0.1:8300")
    status, _, body = raw(port, "GET", "/v1/agent/self")
    check("agent/self without a token: 403", status == 403, f"{status} {body}")
    cfg = json.loads(raw(port, "GET", "/v1/agent/self", {"X-Consul-Token": TOKEN})[2])["Config"]
    check("agent/self names the node and dc1", cfg["NodeName"] == NODE and cfg["Datacenter"] == "dc1", cfg)


def main():
    for var in ("CONSUL_HTTP_TOKEN", "CONSUL_HTTP_ADDR", "CONSUL_HTTP_SSL"):   # py-consul would prefer these
        os.environ.pop(var, None)
    print(f"py-consul {getattr(consul, '__version__', '?')}", flush=True)
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "consul_agent.py"), "--port", "0",
                             "--token", TOKEN, "--node-name", NODE], stdout=subprocess.PIPE, stderr=log, text=True)
    failed = None
    try:
        line = {}
        reader = threading.Thread(target=lambda: line.setdefault("l", proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(10)
        m = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)\n", line.get("l", ""))
        check("the fake printed 'listening on 127.0.0.1:PORT' first", m is not None, line)
        run_checks(int(m.group(1)))
    except Exception as e:  # a Failure, or py-consul raising
        failed = e
        print(f"FAIL {e!r}", flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)    # by PID
        try:
            code = proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    if failed is None:
        try:
            check(f"the fake (pid {proc.pid}) exited on SIGTERM with status 0", code == 0, code)
        except Failure as e:
            failed = e
            print(f"FAIL {e}", flush=True)
    if failed is not None:
        log.seek(0)
        print("--- the fake's stderr (last 40 lines) ---\n" + "".join(log.readlines()[-40:]), flush=True)
    print(f"{len(passed)} passed, {0 if failed is None else 1} failed", flush=True)
    sys.exit(0 if failed is None else 1)


if __name__ == "__main__":
    main()
