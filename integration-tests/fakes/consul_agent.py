#!/usr/bin/env python3
"""A fake Consul agent for tests: the HTTP API subset Hangar's Consul discovery uses.

    python3 consul_agent.py --port 0 [--token TOKEN] [--node-name NAME]

Plain HTTP on 127.0.0.1; the first stdout line is `listening on 127.0.0.1:PORT`; logs go
to stderr; SIGTERM ends it. Python 3.11 standard library only. Datacenter "dc1".

Endpoints (Consul's JSON field names; bodies matched case-insensitively, snake_case
too, as Consul's decoder does): PUT agent/service/register, agent/service/deregister/ID,
agent/check/{pass,warn,fail}/ID (?note=), agent/check/update/ID, catalog/register,
catalog/deregister; GET agent/services, agent/service/ID, agent/checks, agent/self,
catalog/service/NAME, catalog/services, catalog/nodes, health/service/NAME,
health/checks/NAME, status/leader, status/peers. The catalog and health reads are
blocking queries (`index`, `wait`: default 5m, at most 10m) with X-Consul-Index,
X-Consul-KnownLeader and X-Consul-LastContact.

As Consul: service ID defaults to Name; check IDs to `service:<ID>` (`:1`, `:2` … when
several); agent checks start critical unless Status is given; re-registering an ID
replaces the service, keeps Status/Output of the check IDs it reuses and keeps checks
it no longer lists unless `replace-existing-checks`; a TTL check not updated in time
goes critical with Output "TTL expired" (plus the last output); HTTP checks are run
(2xx passing, 429 warning, else critical; timeout 10s; interval at least 1s);
catalog-registered checks are never evaluated; only the agent's node has the passing
`serfHealth` check; `passing` drops entries with any non-passing check, warning too;
the DeregisterCriticalServiceAfter clock starts when a check is *updated* to critical
(TTL expiry, fail, a failed HTTP run), not at a registration that starts critical;
service names and tags match case-insensitively; Tags are [] never null; service Meta
is null in catalog/health when none was given ({} in the agent views).

What real Consul does differently:
- No Raft, gossip, servers or persistence: this one process is the agent, the node it
  runs checks for (`--node-name`, default fake-consul, address 127.0.0.1) and the
  leader; a restart forgets everything. Writes apply at once and there is no
  anti-entropy, so catalog writes about the agent's own node stick.
- One global index, bumped by every change (register, deregister, check status change,
  TTL expiry, automatic deregistration). A blocking query wakes on ANY change; Consul
  keeps indexes per table and per service and wakes less often. No wait/16 jitter. An
  `index` past the current one blocks until the next change.
- An agent check whose Output alone changes shows it at once and bumps no index;
  Consul copies such output to the catalog (bumping the index) only after
  check_update_interval, 5m by default.
- DeregisterCriticalServiceAfter is enforced exactly as given, checked every 200 ms;
  Consul's reaper runs every 30 s and raises any value under 1 minute to 1 minute.
- HTTP checks run at once on registration (Consul first waits a random part of the
  interval). Only TTL and HTTP checks: TCP, gRPC, script … are refused with 400.
- ACL: one all-powerful token (`--token`, sent as X-Consul-Token, `Authorization:
  Bearer` or ?token=) or none. Without it every /v1 request but status/* (open in Consul
  too) gets 403 `Permission denied`. Consul has policies, filters reads for the
  anonymous token rather than refusing them, answers "ACL not found" for an unknown
  token and words denials longer.
- `filter` (bexpr) is refused with 400; `near`, `consistent`, `stale`, `cached` ignored.
  No KV, sessions, Connect, DNS, prepared queries or TLS.
"""

import argparse
import contextlib
import hashlib
import json
import re
import signal
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DC = "dc1"
PASSING, WARNING, CRITICAL = "passing", "warning", "critical"
STATUSES = (PASSING, WARNING, CRITICAL)
OUTPUT_MAX = 4096            # Consul's CheckBufSize
MIN_INTERVAL = 1.0           # Consul's checks.MinInterval
HTTP_TIMEOUT = 10.0          # Consul's default HTTP check timeout
REAP_EVERY = 0.2             # the fake's reaper period (Consul: 30 s)
DEFAULT_WAIT, MAX_WAIT = 300.0, 600.0
WEIGHTS = {"Passing": 1, "Warning": 1}
TRUE, BOOLS = ("", "1", "t", "true"), ("", "1", "t", "true", "0", "f", "false")


class HTTPError(Exception):
    def __init__(self, code, msg):
        super().__init__(msg)
        self.code, self.msg = code, msg


def log(msg):
    print(f"fake-consul: {msg}", file=sys.stderr, flush=True)


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DUR_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(value):
    """Go's time.ParseDuration ("10s", "1m30s", "500ms", "1h"), in seconds; a number is ns."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value / 1e9
    s, sign = str(value), 1.0
    if s[:1] in ("+", "-"):
        sign, s = (-1.0 if s[0] == "-" else 1.0), s[1:]
    if s == "0":
        return 0.0
    total, pos = 0.0, 0
    while pos < len(s) and (m := _DUR_PART.match(s, pos)):
        total, pos = total + float(m.group(1)) * _UNITS[m.group(2)], m.end()
    if not s or pos != len(s) or not isinstance(value, str):
        raise ValueError(f'time: invalid duration "{value}"')
    return sign * total


def format_duration(sec):
    """Go's Duration.String(): 10s, 1m30s, 500ms, 1h0m0s."""
    ns = abs(int(round(sec * 1e9)))
    sign = "-" if sec < 0 else ""

    def frac(n, unit):
        whole, rest = divmod(n, unit)
        return f"{whole}.{str(rest).rjust(len(str(unit)) - 1, '0').rstrip('0')}" if rest else str(whole)
    if ns == 0:
        return "0s"
    if ns < 10**9:
        unit, name = next((u, n) for u, n in ((10**6, "ms"), (10**3, "µs"), (1, "ns")) if ns >= u)
        return f"{sign}{frac(ns, unit)}{name}"
    h, ns = divmod(ns, 3600 * 10**9)
    m, ns = divmod(ns, 60 * 10**9)
    return sign + (f"{h}h" if h else "") + (f"{m}m" if h or m else "") + f"{frac(ns, 10**9)}s"


def field(d, name, default=None):
    """A field of a decoded body, matched as Consul's decoder does (any case, snake_case)."""
    want = name.lower()
    for k, v in (d.items() if isinstance(d, dict) else ()):
        if k.replace("_", "").lower() == want:
            return v
    return default


def duration_field(d, name):
    try:
        return parse_duration(field(d, name)) if field(d, name) not in (None, "") else 0.0
    except ValueError as e:
        raise HTTPError(400, f"Request decode failed: {name}: {e}")


def truncate(output):
    n = len(output)
    return f"{output[:OUTPUT_MAX]} ... (captured {OUTPUT_MAX} of {n} bytes)" if n > OUTPUT_MAX else output


def strip_index(rec):
    return {k: v for k, v in rec.items() if k not in ("CreateIndex", "ModifyIndex")}


def service_record(d, name):
    """A service as the catalog keeps it, from a register body (agent) or its Service (catalog)."""
    return {"ID": field(d, "ID") or name, "Service": name, "Tags": list(field(d, "Tags") or []),
            "Address": field(d, "Address") or "", "Meta": field(d, "Meta") or None,
            "Port": int(field(d, "Port") or 0), "Weights": field(d, "Weights") or dict(WEIGHTS),
            "EnableTagOverride": bool(field(d, "EnableTagOverride"))}


def check_record(node, cid, name, status, **kw):
    return {"Node": node, "CheckID": cid, "Name": name, "Status": status, "Notes": "", "Output": "",
            "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "", "Interval": "", "Timeout": "",
            "ExposedPort": 0, "Definition": {}, **kw}


class Runner:
    """An agent check's runtime: the TTL deadline or HTTP schedule, and the reaper's clock."""

    def __init__(self, **kw):
        self.deadline = self.critical_since = None
        self.next_run, self.running, self.last_output = 0.0, False, ""
        self.__dict__.update(kw)


class Store:
    """The catalog (nodes, services, checks) plus the agent's local services and checks.
    One lock (a Condition): writers bump `index` once per operation and wake all waiters."""

    def __init__(self, node, token):
        self.node, self.token, self.node_id = node, token, str(uuid.uuid4())
        self.cond = threading.Condition()
        self.index, self._dirty = 0, False
        self.nodes, self.services, self.checks = {}, {}, {}   # name or (node, id) -> record
        self.agent_services, self.runners = set(), {}         # agent-local: service ids; check id -> Runner
        lo = "127.0.0.1"
        with self.write():
            self._put(self.nodes, node, {
                "ID": self.node_id, "Node": node, "Address": lo, "Datacenter": DC,
                "TaggedAddresses": {"lan": lo, "lan_ipv4": lo, "wan": lo, "wan_ipv4": lo},
                "Meta": {"consul-network-segment": ""}})
            self._put(self.checks, (node, "serfHealth"), check_record(
                node, "serfHealth", "Serf Health Status", PASSING, Output="Agent alive and reachable"))

    @contextlib.contextmanager
    def write(self):
        with self.cond:
            try:
                yield
            finally:
                self._commit()

    def _commit(self):
        if self._dirty:
            self._dirty = False
            self.cond.notify_all()

    def _bump(self):
        if not self._dirty:
            self._dirty, self.index = True, self.index + 1
        return self.index

    def _put(self, table, key, rec):
        old = table.get(key)
        if old is None or strip_index(old) != strip_index(rec):
            idx = self._bump()
            table[key] = {**rec, "CreateIndex": old["CreateIndex"] if old else idx, "ModifyIndex": idx}

    def _delete(self, table, key):
        if table.pop(key, None) is not None:
            self._bump()

    def authorized(self, query, headers):
        tok = (query.get("token") or [""])[0] or headers.get("X-Consul-Token", "")
        auth = headers.get("Authorization", "")
        if not tok and auth[:7].lower() == "bearer ":
            tok = auth[7:].strip()
        return self.token is None or tok == self.token

    # -- agent -----------------------------------------------------------------------
    @staticmethod
    def _parse_check(c):
        status, http = field(c, "Status") or "", field(c, "HTTP") or ""
        if status and status not in STATUSES:
            raise HTTPError(400, "Status for checks must 'passing', 'warning', 'critical'")
        ttl, interval, timeout, reap = (duration_field(c, k) for k in (
            "TTL", "Interval", "Timeout", "DeregisterCriticalServiceAfter"))
        if ttl > 0:
            kind = "ttl"
        elif http and interval > 0:
            kind = "http"
        elif any(field(c, k) for k in ("TCP", "UDP", "GRPC", "Args", "ScriptArgs", "DockerContainerID",
                                       "H2PING", "OSService", "AliasService")):
            raise HTTPError(400, "this fake Consul agent runs only TTL and HTTP checks")
        else:
            raise HTTPError(400, "Must provide TTL or Script/DockerContainerID/HTTP/TCP and Interval")
        if not isinstance(field(c, "Header") or {}, dict):
            raise HTTPError(400, "Request decode failed: Header: want an object of lists of strings")
        spec = dict(kind=kind, ttl=ttl, http=http, interval=max(interval, MIN_INTERVAL),
                    timeout=timeout or HTTP_TIMEOUT, method=field(c, "Method") or "GET",
                    header=field(c, "Header") or {}, body=field(c, "Body") or "",
                    tls_skip=bool(field(c, "TLSSkipVerify")), reap_after=reap, status=status,
                    check_id=field(c, "CheckID") or field(c, "ID") or "", name=field(c, "Name") or "",
                    notes=field(c, "Notes") or "")
        shown = {"HTTP": http, "Header": spec["header"], "Method": field(c, "Method"),
                 "TLSSkipVerify": spec["tls_skip"], "Interval": interval, "Timeout": timeout,
                 "DeregisterCriticalServiceAfter": reap, "TTL": ttl}
        spec["definition"] = {k: format_duration(v) if isinstance(v, float) else v for k, v in shown.items() if v}
        spec["shown_interval"] = format_duration(interval) if kind == "http" else ""   # as given, like Consul
        spec["shown_timeout"] = format_duration(timeout) if timeout else ""
        return spec

    def agent_register(self, body, replace_checks):
        name, address = field(body, "Name") or "", field(body, "Address") or ""
        if not name:
            raise HTTPError(400, "Missing service name")
        if address in ("0.0.0.0", "::", "[::]"):
            raise HTTPError(400, "Invalid service address")
        svc = service_record(body, name)
        sid, tags = svc["ID"], svc["Tags"]
        specs = [self._parse_check(c) for c in [field(body, "Check")] + list(field(body, "Checks") or []) if c]
        with self.write():
            self._put(self.services, (self.node, sid), svc)
            self.agent_services.add(sid)
            listed = []
            for i, spec in enumerate(specs):
                cid = spec["check_id"] or f"service:{sid}" + (f":{i + 1}" if len(specs) > 1 else "")
                listed.append(cid)
                prev = self.checks.get((self.node, cid)) if cid in self.runners else None
                status, output = (prev["Status"], prev["Output"]) if prev else (spec["status"] or CRITICAL, "")
                self._put(self.checks, (self.node, cid), check_record(
                    self.node, cid, spec["name"] or f"Service '{name}' check", status, Output=output,
                    Notes=spec["notes"], ServiceID=sid, ServiceName=name, ServiceTags=tags, Type=spec["kind"],
                    Interval=spec["shown_interval"], Timeout=spec["shown_timeout"], Definition=spec["definition"]))
                r = self.runners[cid] = Runner(service_id=sid, **spec)
                r.deadline = time.monotonic() + r.ttl if r.kind == "ttl" else None
            if replace_checks:
                for cid in [c for c, r in self.runners.items() if r.service_id == sid and c not in listed]:
                    self._delete(self.checks, (self.node, cid))
                    del self.runners[cid]
        log(f"registered service {sid!r} ({name}), checks {listed}")

    def _remove_agent_service(self, sid):
        self.agent_services.discard(sid)
        self._delete(self.services, (self.node, sid))
        for cid in [c for (n, c), rec in self.checks.items() if n == self.node and rec["ServiceID"] == sid]:
            self._delete(self.checks, (self.node, cid))
            self.runners.pop(cid, None)

    def agent_deregister(self, sid):
        with self.write():
            if sid not in self.agent_services:
                raise HTTPError(404, f'Unknown service ID "{sid}". '
                                     'Ensure that the service ID is passed, not the service name.')
            self._remove_agent_service(sid)
        log(f"deregistered service {sid!r}")

    def _update_check(self, cid, status, output):
        """Consul's local UpdateCheck: keeps the critical clock; an Output-only change in place."""
        r, rec = self.runners.get(cid), self.checks.get((self.node, cid))
        if r is None or rec is None:
            return
        if status != CRITICAL or r.critical_since is None:
            r.critical_since = time.monotonic() if status == CRITICAL else None
        if rec["Status"] == status:
            rec["Output"] = output
        else:
            self._put(self.checks, (self.node, cid), {**rec, "Status": status, "Output": output})
            log(f"check {cid!r} is now {status}")

    def ttl_update(self, cid, status, output):
        with self.write():
            r = self.runners.get(cid)
            if r is None:
                raise HTTPError(404, f'Unknown check ID "{cid}". '
                                     'Ensure that the check ID is passed, not the check name.')
            if r.kind != "ttl":
                raise HTTPError(500, f'CheckID "{cid}" does not have associated TTL')
            r.last_output, r.deadline = truncate(output), time.monotonic() + r.ttl
            self._update_check(cid, status, r.last_output)

    def agent_service(self, sid):
        s = self.services[(self.node, sid)]
        return {"ID": s["ID"], "Service": s["Service"], "Tags": s["Tags"], "Meta": s["Meta"] or {},
                "Port": s["Port"], "Address": s["Address"], "Weights": s["Weights"],
                "EnableTagOverride": s["EnableTagOverride"], "Datacenter": DC}

    # -- background: TTL expiry, HTTP check runs, the reaper ---------------------------
    def tick_loop(self):
        with self.cond:
            while True:
                try:
                    self._tick(time.monotonic())
                except Exception as e:  # a bug in the fake: keep the clock running
                    log(f"internal error in the check loop: {e!r}")
                self._commit()
                soon = [r.deadline if r.kind == "ttl" else r.next_run for r in self.runners.values()
                        if (r.kind == "ttl" and r.deadline is not None) or (r.kind == "http" and not r.running)]
                self.cond.wait(max(0.001, min([REAP_EVERY] + [t - time.monotonic() for t in soon])))

    def _tick(self, now):
        for cid, r in list(self.runners.items()):
            if r.kind == "ttl" and r.deadline is not None and now >= r.deadline:
                r.deadline = None
                log(f"check {cid!r} missed its TTL")
                self._update_check(cid, CRITICAL, "TTL expired" + (
                    f" (last output before timeout follows): {r.last_output}" if r.last_output else ""))
            elif r.kind == "http" and not r.running and now >= r.next_run:
                r.running = True
                threading.Thread(target=self._run_http, args=(cid, r), daemon=True).start()
        for cid, r in list(self.runners.items()):
            if (r.reap_after > 0 and r.critical_since is not None and now - r.critical_since > r.reap_after
                    and r.service_id in self.agent_services):
                log(f"check {cid!r} critical for over {format_duration(r.reap_after)}: "
                    f"deregistering {r.service_id!r}")
                self._remove_agent_service(r.service_id)

    def _run_http(self, cid, r):
        status, output = http_probe(r)
        with self.write():
            if self.runners.get(cid) is r:
                r.running, r.next_run = False, time.monotonic() + r.interval
                self._update_check(cid, status, truncate(output))
            self.cond.notify_all()   # the tick loop reschedules

    # -- catalog ---------------------------------------------------------------------
    def catalog_register(self, body):
        node, address = field(body, "Node") or "", field(body, "Address") or ""
        if not node or not address:
            raise HTTPError(500, "Must provide node and address")
        if (field(body, "Datacenter") or DC) != DC:
            raise HTTPError(500, "No path to datacenter")
        svc = field(body, "Service") or None
        if svc:
            if not field(svc, "Service"):
                raise HTTPError(500, "Must provide service name with ID")
            svc = service_record(svc, field(svc, "Service"))
        with self.write():
            checks = []
            for c in [field(body, "Check")] + list(field(body, "Checks") or []):
                if not c:
                    continue
                cid, csid = field(c, "CheckID") or field(c, "Name") or "", field(c, "ServiceID") or ""
                status = field(c, "Status") or CRITICAL
                owner = svc if svc and svc["ID"] == csid else self.services.get((node, csid))
                if not cid:
                    raise HTTPError(500, "Missing check ID")
                if status not in STATUSES:
                    raise HTTPError(500, f"Invalid check status: '{status}'")
                if (field(c, "Node") or node) != node:
                    raise HTTPError(500, f"Check node {field(c, 'Node')!r} does not match node {node!r}")
                if csid and owner is None:
                    raise HTTPError(500, "Missing service registration")
                extra = {k: field(c, k) or "" for k in ("Notes", "Output", "Type", "Interval", "Timeout")}
                checks.append(check_record(
                    node, cid, field(c, "Name") or "", status, ServiceID=csid, **extra,
                    ServiceName=owner["Service"] if owner else "", ServiceTags=owner["Tags"] if owner else [],
                    Definition=field(c, "Definition") or {}))
            old = self.nodes.get(node)
            if old is None or not field(body, "SkipNodeUpdate"):
                self._put(self.nodes, node, {
                    "ID": field(body, "ID") or (old or {}).get("ID", ""), "Node": node, "Address": address,
                    "Datacenter": DC, "TaggedAddresses": field(body, "TaggedAddresses") or None,
                    "Meta": field(body, "NodeMeta") or None})
            if svc:
                self._put(self.services, (node, svc["ID"]), svc)
            for c in checks:
                self._put(self.checks, (node, c["CheckID"]), c)
        return True

    def catalog_deregister(self, body):
        node, sid, cid = (field(body, k) or "" for k in ("Node", "ServiceID", "CheckID"))
        if not node:
            raise HTTPError(500, "Must provide node")
        local = node == self.node
        with self.write():
            gone = [(node, cid)] if cid else []        # (node, check id) keys to remove
            if sid:
                self._delete(self.services, (node, sid))
                gone += [k for k, rec in self.checks.items() if k[0] == node and rec["ServiceID"] == sid]
                if local:
                    self.agent_services.discard(sid)
            if not sid and not cid:
                self._delete(self.nodes, node)
                gone += [k for k in self.checks if k[0] == node]
                for key in [k for k in self.services if k[0] == node]:
                    self._delete(self.services, key)
                if local:
                    self.agent_services.clear()
            for key in gone:
                self._delete(self.checks, key)
                if local:
                    self.runners.pop(key[1], None)
        return True

    # -- reads (called under the lock, by query) ----------------------------------------
    def query(self, index, wait, fn):
        """A blocking query: waits for the index to pass `index` (or `wait`), then answers."""
        with self.cond:
            if index > 0:
                target, end = min(index, self.index), time.monotonic() + wait
                while self.index <= target and (left := end - time.monotonic()) > 0:
                    self.cond.wait(left)
            return self.index, fn()

    def instances(self, name, tags, node_meta):
        want = {t.lower() for t in tags}
        for (node, _), s in sorted(self.services.items()):
            n = self.nodes.get(node)
            if (n and s["Service"].lower() == name.lower() and want <= {t.lower() for t in s["Tags"]}
                    and all((n["Meta"] or {}).get(k) == v for k, v in node_meta)):
                yield n, s

    def catalog_service(self, name, tags, node_meta):
        return [{"ID": n["ID"], "Node": n["Node"], "Address": n["Address"], "Datacenter": DC,
                 "TaggedAddresses": n["TaggedAddresses"], "NodeMeta": n["Meta"], "ServiceKind": "",
                 "ServiceID": s["ID"], "ServiceName": s["Service"], "ServiceTags": s["Tags"],
                 "ServiceAddress": s["Address"], "ServiceWeights": s["Weights"], "ServiceMeta": s["Meta"],
                 "ServicePort": s["Port"], "ServiceEnableTagOverride": s["EnableTagOverride"],
                 "CreateIndex": s["CreateIndex"], "ModifyIndex": s["ModifyIndex"]}
                for n, s in self.instances(name, tags, node_meta)]

    def health_service(self, name, tags, node_meta, passing):
        out = []
        for n, s in self.instances(name, tags, node_meta):
            mine = sorted((c for (cn, _), c in self.checks.items() if cn == n["Node"]), key=lambda c: c["CheckID"])
            checks = ([dict(c) for c in mine if c["ServiceID"] == ""]          # node checks first, as Consul
                      + [dict(c) for c in mine if c["ServiceID"] == s["ID"]])
            if not (passing and any(c["Status"] != PASSING for c in checks)):
                out.append({"Node": dict(n), "Service": dict(s), "Checks": checks})
        return out

    def catalog_services(self):
        out = {}
        for s in self.services.values():
            out.setdefault(s["Service"], set()).update(s["Tags"])
        return {k: sorted(v) for k, v in sorted(out.items())}


def http_probe(r):
    """Runs an HTTP check once as Consul does: (status, output)."""
    handlers = [urllib.request.ProxyHandler({})]   # never through an environment proxy
    if r.tls_skip:
        handlers.append(urllib.request.HTTPSHandler(context=ssl._create_unverified_context()))
    try:
        req = urllib.request.Request(r.http, data=r.body.encode() or None, method=r.method)
        for k, vals in r.header.items():
            req.add_header(k, ", ".join(vals) if isinstance(vals, list) else str(vals))
        if not req.has_header("User-agent"):
            req.add_header("User-Agent", "Consul Health Check")
        if not req.has_header("Accept"):
            req.add_header("Accept", "text/plain, text/*, */*")
        with urllib.request.build_opener(*handlers).open(req, timeout=r.timeout) as resp:
            code, reason, body = resp.status, resp.reason, resp.read(OUTPUT_MAX)
    except urllib.error.HTTPError as e:
        code, reason, body = e.code, e.reason, e.read(OUTPUT_MAX)
    except Exception as e:  # refused, timed out, bad URL …
        return CRITICAL, f'{r.method.capitalize()} "{r.http}": {getattr(e, "reason", e)}'
    status = PASSING if 200 <= code < 300 else WARNING if code == 429 else CRITICAL
    return status, f"HTTP {r.method} {r.http}: {code} {reason} Output: {body.decode('utf-8', 'replace')}"


class Handler(BaseHTTPRequestHandler):
    protocol_version, server_version = "HTTP/1.1", "fake-consul"

    def _handle(self):
        method, raw, url = self.command, self._read_body(), urllib.parse.urlsplit(self.path)
        path, q = urllib.parse.unquote(url.path), urllib.parse.parse_qs(url.query, keep_blank_values=True)
        headers = []
        try:
            open_path = not path.startswith("/v1/") or path.startswith("/v1/status/")   # as in Consul
            if not open_path and not self.server.store.authorized(q, self.headers):
                raise HTTPError(403, "Permission denied")
            result = self._route(self.server.store, method, path, q, raw, headers)
        except HTTPError as e:
            return self._send(e.code, e.msg.encode(), "text/plain; charset=utf-8")
        except Exception as e:  # a bug in the fake
            log(f"internal error on {method} {path}: {e!r}")
            return self._send(500, repr(e).encode(), "text/plain; charset=utf-8")
        body = b"" if result is None else json.dumps(result, indent=4 if "pretty" in q else None).encode()
        self._send(200, body, headers=headers)

    do_GET = do_PUT = do_POST = do_DELETE = _handle

    def log_request(self, code="-", size="-"):
        log(f"{self.command} {urllib.parse.urlsplit(self.path).path} {code}")   # no ?token= in logs

    def log_message(self, fmt, *args):
        log(fmt % args)

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, code, body=b"", ctype="application/json", headers=()):
        self.send_response(code)
        for k, v in [("Content-Type", ctype)] * bool(body) + list(headers) + [("Content-Length", str(len(body)))]:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _route(self, store, method, path, q, raw, headers):
        def arg(name, default=""):
            return (q.get(name) or [default])[0]

        def body():
            try:
                return json.loads(raw or b"EOF")
            except ValueError as e:
                raise HTTPError(400, f"Request decode failed: {'EOF' if not raw.strip() else e}")

        def blocking(fn):
            if arg("dc", DC) != DC:
                raise HTTPError(500, "No path to datacenter")
            if arg("filter"):
                raise HTTPError(400, "this fake Consul agent does not support ?filter=")
            try:
                index = int(arg("index") or 0)
            except ValueError:
                raise HTTPError(400, "Invalid index")
            try:
                wait = min(parse_duration(arg("wait")), MAX_WAIT) if arg("wait") else DEFAULT_WAIT
            except ValueError:
                raise HTTPError(400, "Invalid wait time")
            idx, out = store.query(index, wait, fn)
            headers.extend([("X-Consul-Index", str(idx)), ("X-Consul-KnownLeader", "true"),
                            ("X-Consul-LastContact", "0")])
            return out

        def locked(fn):
            if arg("filter"):
                raise HTTPError(400, "this fake Consul agent does not support ?filter=")
            with store.cond:
                return fn()

        def service_view(sid):
            if sid not in store.agent_services:
                raise HTTPError(404, f"unknown service ID: {sid}")
            view = store.agent_service(sid)
            view["ContentHash"] = hashlib.sha256(json.dumps(view, sort_keys=True).encode()).hexdigest()[:16]
            headers.append(("X-Consul-ContentHash", view["ContentHash"]))
            return view

        def check_update(cid, b):
            if (status := field(b, "Status") or "") not in STATUSES:
                raise HTTPError(400, f"Invalid check status: '{status}'")
            return store.ttl_update(cid, status, str(field(b, "Output") or ""))

        def passing():
            if arg("passing").lower() not in BOOLS:
                raise HTTPError(400, "Invalid value for ?passing")
            return "passing" in q and arg("passing").lower() in TRUE

        tags = q.get("tag", [])
        meta = [tuple(v.split(":", 1)) for v in q.get("node-meta", []) if ":" in v]
        verbs = {"pass": PASSING, "warn": WARNING, "fail": CRITICAL}
        routes = [  # first match wins
            ("PUT", "/v1/agent/service/register",
             lambda: store.agent_register(body(), arg("replace-existing-checks").lower() in TRUE[1:])),
            ("PUT", "/v1/agent/service/deregister/(.+)", store.agent_deregister),
            ("GET", "/v1/agent/service/(.+)", lambda sid: locked(lambda: service_view(sid))),
            ("GET", "/v1/agent/services", lambda: locked(lambda: {
                s: store.agent_service(s) for s in sorted(store.agent_services)})),
            ("GET", "/v1/agent/checks", lambda: locked(lambda: {
                c: strip_index(store.checks[(store.node, c)]) for c in sorted(store.runners)
                if (store.node, c) in store.checks})),
            ("PUT", "/v1/agent/check/(pass|warn|fail)/(.+)",
             lambda verb, cid: store.ttl_update(cid, verbs[verb], arg("note"))),
            ("PUT", "/v1/agent/check/update/(.+)", lambda cid: check_update(cid, body())),
            ("GET", "/v1/agent/self", lambda: {
                "Config": {"Datacenter": DC, "PrimaryDatacenter": DC, "NodeName": store.node, "NodeID": store.node_id,
                           "Server": True, "Revision": "fake-consul"},
                "Member": {"Name": store.node, "Addr": "127.0.0.1", "Port": 8301, "Status": 1,
                           "Tags": {"dc": DC, "role": "consul", "id": store.node_id}}}),
            ("PUT", "/v1/catalog/register", lambda: store.catalog_register(body())),
            ("PUT", "/v1/catalog/deregister", lambda: store.catalog_deregister(body())),
            ("GET", "/v1/catalog/service/(.+)",
             lambda name: blocking(lambda: store.catalog_service(name, tags, meta))),
            ("GET", "/v1/catalog/services", lambda: blocking(store.catalog_services)),
            ("GET", "/v1/catalog/nodes", lambda: blocking(lambda: [
                dict(n) for _, n in sorted(store.nodes.items())
                if all((n["Meta"] or {}).get(k) == v for k, v in meta)])),
            ("GET", "/v1/health/service/(.+)", lambda name: (
                lambda p: blocking(lambda: store.health_service(name, tags, meta, p)))(passing())),
            ("GET", "/v1/health/checks/(.+)", lambda name: blocking(lambda: [
                dict(c) for _, c in sorted(store.checks.items()) if c["ServiceName"].lower() == name.lower()])),
            ("GET", "/v1/status/leader", lambda: "127.0.0.1:8300"),
            ("GET", "/v1/status/peers", lambda: ["127.0.0.1:8300"]),
        ]
        for want, pattern, fn in routes:
            if m := re.fullmatch(pattern, path):
                if method != want:
                    raise HTTPError(405, f"method {method} not allowed")
                return fn(*m.groups())
        raise HTTPError(404, "404 page not found")


def main():
    ap = argparse.ArgumentParser(description="A fake Consul agent for tests; see the module docstring.")
    ap.add_argument("--port", type=int, default=8500, help="0 picks a free port")
    ap.add_argument("--token", help="the one ACL token every /v1 request must carry")
    ap.add_argument("--node-name", default="fake-consul")
    a = ap.parse_args()
    store = Store(a.node_name, a.token)
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads, server.store = True, store
    threading.Thread(target=store.tick_loop, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    log(f"node {a.node_name!r}, datacenter {DC}, ACL token {'required' if a.token else 'off'}")
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
