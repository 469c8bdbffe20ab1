#!/usr/bin/env python3
"""Offline checks of the telemetry stack in docker/telemetry/ (Python standard library + PyYAML).

    check_stack.py NAMES_FILE                      metric names a live scrape produced, one a line
    check_stack.py --names-from-metrics FILE...    Prometheus text exposition files (/metrics bodies)
    check_stack.py --offline                       everything but the comparison with a live scrape
    check_stack.py --list-metrics                  print the metric names the dashboard uses, and exit

It checks that:
  - the dashboard (grafana/dashboards/hangar.json) parses; every panel has a title, every panel
    but a row a data source provisioned in datasources.yml and at least one query; panel ids are
    unique; every rate() and irate() is over [$__rate_interval];
  - every metric name in every query (and in the template variables) is a Hangar metric, and is
    among the names of the live scrape (histogram _bucket/_sum/_count folded into their family);
    a panel whose metrics are missing is listed with them;
  - the YAML files parse; the compose override adds OTEL_EXPORTER_OTLP_ENDPOINT to the six
    Hangar services (and changes nothing else of theirs); prometheus.yml scrapes exactly those
    six services on their admin port; prometheus-local.yml, the collector's config, Grafana's
    provisioning and compose-local.yml fit together; files mounted into containers exist.

One line per failure; a summary line at the end; exit status 1 on any failure, 2 on bad usage.
"""

import argparse
import json
import os
import re
import sys

try:
    import yaml
except ImportError:  # pragma: no cover
    print("check_stack: PyYAML is needed (pip install pyyaml)", file=sys.stderr)
    sys.exit(2)

try:
    import tomllib
except ImportError:  # Python < 3.11: the admin port is then read with a regular expression.
    tomllib = None

# The metric families Hangar's processes expose (counters without a _total suffix).
HISTOGRAMS = {
    "api_s3_request_duration",
    "block_read_duration",
    "block_write_duration",
    "rpc_duration",
    "table_get_request_duration",
    "table_put_request_duration",
}
KNOWN_METRICS = HISTOGRAMS | {
    "api_s3_request_counter",
    "api_s3_error_counter",
    "api_s3_request_bytes_received",
    "api_s3_response_bytes_sent",
    "block_bytes_read",
    "block_bytes_written",
    "block_delete_counter",
    "block_resync_counter",
    "block_resync_queue_length",
    "block_resync_errored_blocks",
    "rpc_request_counter",
    "rpc_error_counter",
    "rpc_timeout_counter",
    "table_get_request_counter",
    "table_put_request_counter",
    "table_internal_update_counter",
    "table_merkle_updater_todo_queue_length",
    "table_sync_items_sent",
    "table_sync_items_received",
    "cluster_healthy",
    "cluster_available",
    "cluster_connected_nodes",
    "cluster_known_nodes",
    "cluster_storage_nodes",
    "cluster_storage_nodes_ok",
    "cluster_partitions",
    "cluster_partitions_quorum",
    "cluster_partitions_all_ok",
    "cluster_layout_node_connected",
    "hangar_build_info",
    "hangar_replication_factor",
    "hangar_local_disk_avail",
    "hangar_local_disk_total",
    "hangar_layout_version",
    "hangar_layout_versions_live",
    "hangar_layout_sync_progress",
    "hangar_worker_state",
    "hangar_worker_queue_length",
    "hangar_worker_errors",
    "hangar_block_corruptions",
    "hangar_disk_full",
    "hangar_connections_refused",
    "hangar_connections_timed_out",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# The compose cluster's six Hangar services and the Prometheus job of each.
HANGAR_SERVICES = {
    "control-plane": "hangar-control-plane",
    "data1": "hangar-data-node",
    "data2": "hangar-data-node",
    "data3": "hangar-data-node",
    "s3-1": "hangar-s3-frontend",
    "s3-2": "hangar-s3-frontend",
}
JOBS = sorted(set(HANGAR_SERVICES.values()))
TELEMETRY_SERVICES = ("otel-collector", "jaeger", "prometheus", "grafana")
OTLP_ENDPOINT = "http://otel-collector:4317"

# Files, relative to the repository's root.
TELEMETRY = "docker/telemetry"
DASHBOARD = f"{TELEMETRY}/grafana/dashboards/hangar.json"
DATASOURCES = f"{TELEMETRY}/grafana/provisioning/datasources/datasources.yml"
DASHBOARD_PROVIDERS = f"{TELEMETRY}/grafana/provisioning/dashboards/dashboards.yml"
PROMETHEUS = f"{TELEMETRY}/prometheus.yml"
PROMETHEUS_LOCAL = f"{TELEMETRY}/prometheus-local.yml"
COLLECTOR = f"{TELEMETRY}/otel-collector.yml"
OVERRIDE = f"{TELEMETRY}/compose.yml"
COMPOSE_LOCAL = f"{TELEMETRY}/compose-local.yml"
BASE_COMPOSE = "compose.yml"

PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "atan2", "inf", "nan", "start", "end",
}


class Checker:
    def __init__(self, root):
        self.root = root
        self.failures = []
        self.checks = 0
        self.notes = []

    def check(self, ok, message):
        self.checks += 1
        if not ok:
            self.failures.append(message)
        return ok

    def fail(self, message):
        return self.check(False, message)

    def path(self, rel):
        return os.path.join(self.root, rel)

    def load_yaml(self, rel):
        self.checks += 1
        try:
            with open(self.path(rel), encoding="utf-8") as f:
                doc = yaml.safe_load(f)
        except OSError as e:
            self.failures.append(f"{rel}: cannot read: {e.strerror}")
            return None
        except yaml.YAMLError as e:
            self.failures.append(f"{rel}: not valid YAML: {' '.join(str(e).split())}")
            return None
        if not isinstance(doc, dict):
            self.failures.append(f"{rel}: expected a mapping at the top")
            return None
        return doc


# ------------------------------------------------------------------------------ PromQL


def strip_strings(expr):
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)


def metric_names(expr):
    """The metric names an expression selects: identifiers that are not functions, keywords,
    label names, grouping labels, durations or template variables; plus {__name__="..."}."""
    names = set()
    for m in re.finditer(r'__name__\s*=\s*"([A-Za-z_:][A-Za-z0-9_:]*)"', expr):
        names.add(m.group(1))
    s = strip_strings(expr)
    s = re.sub(r"\{[^{}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\[\]]*\]", " ", s)  # ranges, subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", s)
    token = re.compile(
        r"(?P<var>\$\{?[A-Za-z0-9_]+\}?)"
        r"|(?P<dur>\d+(?:\.\d+)?(?:ms|[smhdwy])(?![A-Za-z0-9_]))"
        r"|(?P<num>0[xX][0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
        r"|(?P<id>[A-Za-z_:][A-Za-z0-9_:]*)"
    )
    for m in token.finditer(s):
        ident = m.group("id")
        if not ident or ident.lower() in PROMQL_KEYWORDS:
            continue
        if re.match(r"\s*\(", s[m.end():]):  # a function or an aggregation
            continue
        names.add(ident)
    return names


def family(name):
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
            return name[: -len(suffix)]
    return name


def rate_ranges(expr):
    """The range of every rate()/irate() of the expression, as written."""
    s = strip_strings(expr)
    out = []
    for m in re.finditer(r"\b(i?rate)\s*\(", s):
        depth, i = 1, m.end()
        rng = None
        while i < len(s) and depth:
            c = s[i]
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            elif c == "[" and depth == 1:
                j = s.index("]", i)
                rng = s[i + 1:j]
                i = j
            i += 1
        out.append((m.group(1), rng))
    return out


# ------------------------------------------------------------------------------ live names


def read_names_file(path):
    names = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                names.add(line.split()[0])
    return names


def read_exposition(path):
    """Names a query can select from one /metrics body (Prometheus text 0.0.4 or OpenMetrics):
    every sample's name, every histogram or summary family's name, and the series name of
    families declared without samples yet (a labelled family before its first event)."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    types = {}
    samples = set()
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                types[parts[2]] = parts[3].strip()
            continue
        m = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line)
        if m:
            samples.add(m.group(0))
    # How this body names counter series: as the family (Prometheus text, or Hangar's
    # counters kept under Garage's names), or with _total (OpenMetrics).
    counters = [fam for fam, typ in types.items() if typ == "counter"]
    bare = any(fam in samples for fam in counters)
    suffixed = any(fam + "_total" in samples and not fam.endswith("_total") for fam in counters)
    openmetrics = any(line.strip() == "# EOF" for line in lines)
    counter_total = suffixed or (openmetrics and not bare)
    names = set(samples)
    for fam, typ in types.items():
        if typ in ("histogram", "gaugehistogram", "summary"):
            names.add(fam)
        elif typ == "counter" and counter_total and not fam.endswith("_total"):
            names.add(fam + "_total")
        elif typ == "info" and openmetrics:
            names.add(fam + "_info")
        else:
            names.add(fam)
    for name in samples:  # untyped histograms
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix):
                base = name[: -len(suffix)]
                if base + "_bucket" in samples and base + "_count" in samples:
                    names.add(base)
    return names


def present(name, live):
    if name in live:
        return True
    if name in HISTOGRAMS:
        return any(name + s in live for s in HISTOGRAM_SUFFIXES)
    return False


def near_miss(name, live):
    """A name of the scrape that is probably the one meant (another prefix or suffix)."""
    bases = {name, "hangar_" + name}
    if name.startswith("hangar_"):
        bases.add(name[len("hangar_"):])
    for base in sorted(bases):
        for suffix in ("", "_total", "_seconds", "_bytes"):
            other = base + suffix
            if other != name and (other in live or other + "_bucket" in live):
                return other
    return None


# ------------------------------------------------------------------------------ dashboard


def all_panels(panels):
    for p in panels or []:
        yield p
        yield from all_panels(p.get("panels"))


def check_dashboard(c, datasource_uids, live, live_source):
    rel = DASHBOARD
    c.checks += 1
    try:
        with open(c.path(rel), encoding="utf-8") as f:
            dash = json.load(f)
    except OSError as e:
        c.failures.append(f"{rel}: cannot read: {e.strerror}")
        return None
    except json.JSONDecodeError as e:
        c.failures.append(f"{rel}: not valid JSON: {e}")
        return None

    c.check(isinstance(dash.get("schemaVersion"), int), f"{rel}: no schemaVersion")
    c.check(bool(dash.get("uid")) and bool(dash.get("title")), f"{rel}: the dashboard needs a uid and a title")
    used = {}  # metric family -> [panel labels]
    panels = list(all_panels(dash.get("panels")))
    c.check(bool(panels), f"{rel}: no panels")

    seen_ids = {}
    for p in panels:
        pid = p.get("id")
        title = (p.get("title") or "").strip()
        label = f'panel {pid} "{title}"' if title else f"panel {pid}"
        if c.check(isinstance(pid, int), f"{rel}: {label}: no numeric id"):
            c.check(pid not in seen_ids, f"{rel}: {label}: id {pid} also used by panel \"{seen_ids.get(pid)}\"")
            seen_ids.setdefault(pid, title)
        c.check(bool(title), f"{rel}: {label}: no title")
        if p.get("type") == "row":
            continue

        def ds_ok(ds, where):
            if isinstance(ds, dict):
                uid = ds.get("uid")
            else:
                uid = ds
            if not uid:
                return c.fail(f"{rel}: {label}: {where} has no data source")
            return c.check(uid in datasource_uids,
                           f"{rel}: {label}: {where} uses data source uid `{uid}`, which "
                           f"datasources.yml does not provision ({', '.join(sorted(datasource_uids)) or 'none'})")

        ds_ok(p.get("datasource"), "the panel")
        targets = p.get("targets") or []
        if p.get("type") in ("text", "news", "dashlist"):
            continue
        if not c.check(bool(targets), f"{rel}: {label}: no query"):
            continue
        missing = []
        for t in targets:
            ref = t.get("refId", "?")
            if "datasource" in t:
                ds_ok(t["datasource"], f"query {ref}")
            expr = t.get("expr")
            if not c.check(isinstance(expr, str) and expr.strip(), f"{rel}: {label}: query {ref} has no expr"):
                continue
            for fn, rng in rate_ranges(expr):
                c.check(rng is not None and rng.strip() == "$__rate_interval",
                        f"{rel}: {label}: query {ref}: {fn}() over [{rng}], not [$__rate_interval]")
            names = metric_names(expr)
            if not c.check(bool(names), f"{rel}: {label}: query {ref} selects no metric: {expr}"):
                continue
            for name in sorted(names):
                fam = family(name)
                used.setdefault(fam, []).append(label)
                c.check(fam in KNOWN_METRICS, f"{rel}: {label}: query {ref}: `{name}` is not a Hangar metric")
                if live is not None and fam in KNOWN_METRICS and not (present(name, live) or present(fam, live)):
                    if fam not in missing:
                        missing.append(fam)
        if live is not None:
            if missing:
                hints = []
                for m in missing:
                    other = near_miss(m, live)
                    hints.append(f"{m} (the scrape has {other})" if other else m)
                c.fail(f"{rel}: {label}: not in {live_source}: {', '.join(hints)}")
            else:
                c.check(True, "")

    # Template variables.
    for var in (dash.get("templating") or {}).get("list") or []:
        if var.get("type") != "query":
            continue
        name = var.get("name", "?")
        q = var.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if not c.check(isinstance(q, str) and q.strip(), f"{rel}: variable ${name}: no query"):
            continue
        ds = var.get("datasource")
        uid = ds.get("uid") if isinstance(ds, dict) else ds
        c.check(uid in datasource_uids, f"{rel}: variable ${name}: data source uid `{uid}` is not provisioned")
        m = re.match(r"\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$", q)
        inner = m.group(1) if m else q
        for mname in metric_names(inner):
            fam = family(mname)
            used.setdefault(fam, []).append(f"variable ${name}")
            c.check(fam in KNOWN_METRICS, f"{rel}: variable ${name}: `{mname}` is not a Hangar metric")
            if live is not None:
                c.check(present(mname, live) or present(fam, live), f"{rel}: variable ${name}: {fam} not in {live_source}")

    unused = sorted(KNOWN_METRICS - set(used))
    if unused:
        c.notes.append(f"metrics no panel shows: {', '.join(unused)}")
    return used


# ------------------------------------------------------------------------------ compose and configs


def env_map(env):
    """A service's environment as a dict (map or list form)."""
    if env is None:
        return {}
    if isinstance(env, dict):
        return {str(k): ("" if v is None else str(v)) for k, v in env.items()}
    out = {}
    for item in env:
        k, _, v = str(item).partition("=")
        out[k] = v
    return out


def expand(value, env):
    """Expands $VAR and ${VAR} as Grafana does in provisioning files."""
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)",
                  lambda m: env.get(m.group(1) or m.group(2), ""), value)


def interpolate(value):
    """Compose's variable substitution with every variable unset: ${VAR:-default} and
    ${VAR-default} give the default, ${VAR}, ${VAR:?error} and $VAR nothing, $$ a $."""
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        op, default = m.group(3), m.group(4)
        return default if op in (":-", "-") else ""
    return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)((:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)",
                  lambda m: sub(m) if m.group(0) == "$$" or m.group(1) else "", value)


def volume_mounts(service, raw=False):
    """(source, target) of each volume of a service, short or long syntax; the source with
    compose's variables substituted (their defaults), or as written with raw=True."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            src, target = str(v.get("source", "")), str(v.get("target", ""))
        else:
            parts = interpolate(str(v)).split(":")
            if len(parts) < 2:
                continue
            src, target = parts[0], parts[1]
            if raw:
                written = str(v)
                src = written[: len(written) - len(":".join(parts[1:]))].rstrip(":")
        out.append((src, target))
    return out


def check_mounts(c, rel, services, base_dir):
    """Relative bind mounts of the telemetry services must exist, relative to base_dir."""
    for name in TELEMETRY_SERVICES:
        for src, _ in volume_mounts(services.get(name) or {}):
            if not src.startswith("."):
                continue
            c.check(os.path.exists(os.path.join(c.path(base_dir), src)),
                    f"{rel}: {name} mounts {src}, which does not exist relative to {base_dir or 'the repository root'}/")


def check_images(c, rel, services):
    for name in TELEMETRY_SERVICES:
        image = (services.get(name) or {}).get("image", "")
        repo, _, tag = str(image).rpartition(":")
        c.check(bool(repo) and "/" not in tag and tag not in ("", "latest"),
                f"{rel}: {name}: image `{image}` is not pinned to a version")


def admin_port_of_toml(text):
    if tomllib is not None:
        try:
            addr = tomllib.loads(text).get("admin", {}).get("api_bind_addr")
        except tomllib.TOMLDecodeError:
            return None
    else:
        m = re.search(r'^\[admin\][^\[]*?^api_bind_addr\s*=\s*"([^"]+)"', text, re.M | re.S)
        addr = m.group(1) if m else None
    if not addr or ":" not in addr:
        return None
    return addr.rsplit(":", 1)[1]


def check_compose(c, base, override):
    if base is None or override is None:
        return
    base_services = base.get("services") or {}
    c.check(set(base_services) == set(HANGAR_SERVICES),
            f"{BASE_COMPOSE}: services are {sorted(base_services)}, expected {sorted(HANGAR_SERVICES)} "
            f"(update check_stack.py, prometheus.yml and the override together)")
    services = override.get("services") or {}
    for name in HANGAR_SERVICES:
        svc = services.get(name)
        if not c.check(isinstance(svc, dict), f"{OVERRIDE}: does not add OTEL_EXPORTER_OTLP_ENDPOINT to {name} "
                                              f"(no service `{name}`)"):
            continue
        env = env_map(svc.get("environment"))
        c.check(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") == OTLP_ENDPOINT,
                f"{OVERRIDE}: {name}: OTEL_EXPORTER_OTLP_ENDPOINT is "
                f"{env.get('OTEL_EXPORTER_OTLP_ENDPOINT', 'not set')!s}, expected {OTLP_ENDPOINT}")
        extra = sorted(set(svc) - {"environment"})
        c.check(not extra, f"{OVERRIDE}: {name}: the override also sets {', '.join(extra)} (only environment "
                           f"is meant to change)")
        clash = sorted(set(env) & set(env_map((base_services.get(name) or {}).get("environment"))))
        c.check(not clash, f"{OVERRIDE}: {name}: overrides the cluster's own {', '.join(clash)}")
    for name in TELEMETRY_SERVICES:
        svc = services.get(name)
        if not c.check(isinstance(svc, dict), f"{OVERRIDE}: no service `{name}`"):
            continue
        nets = svc.get("networks") or []
        c.check("hangar" in nets, f"{OVERRIDE}: {name} is not on the network `hangar`")
    c.check(not set(services) - set(HANGAR_SERVICES) - set(TELEMETRY_SERVICES),
            f"{OVERRIDE}: unexpected services {sorted(set(services) - set(HANGAR_SERVICES) - set(TELEMETRY_SERVICES))}")
    check_images(c, OVERRIDE, services)
    check_mounts(c, OVERRIDE, services, "")  # an override's paths are relative to the first file's directory
    collector_cmd = " ".join(map(str, (services.get("otel-collector") or {}).get("command") or []))
    mounts = dict((t, s) for s, t in volume_mounts(services.get("otel-collector") or {}))
    cfg = re.search(r"--config[= ](?:file:)?(/\S+)", collector_cmd)
    cfg_path = cfg.group(1) if cfg else "/etc/otelcol-contrib/config.yaml"
    c.check(mounts.get(cfg_path, "").endswith("otel-collector.yml"),
            f"{OVERRIDE}: otel-collector does not read otel-collector.yml (its config is {cfg_path})")
    prom_mounts = dict((t, s) for s, t in volume_mounts(services.get("prometheus") or {}))
    c.check(prom_mounts.get("/etc/prometheus/prometheus.yml", "").endswith("/prometheus.yml"),
            f"{OVERRIDE}: prometheus does not mount prometheus.yml at /etc/prometheus/prometheus.yml")

    # The admin port each service's config gives, and the targets must use.
    ports = {}
    for name in HANGAR_SERVICES:
        svc = base_services.get(name) or {}
        env = env_map(svc.get("environment"))
        if "HANGAR_ADMIN_API_BIND_ADDR" in env:
            ports[name] = env["HANGAR_ADMIN_API_BIND_ADDR"].rsplit(":", 1)[-1]
            continue
        for src, target in volume_mounts(svc):
            if target == "/etc/hangar/hangar.toml" and src.endswith(".toml"):
                try:
                    with open(c.path(src), encoding="utf-8") as f:
                        ports[name] = admin_port_of_toml(f.read())
                except OSError:
                    c.fail(f"{BASE_COMPOSE}: {name}: cannot read its config {src}")
    return ports


def check_prometheus(c, prom, ports):
    if prom is None:
        return
    rel = PROMETHEUS
    glob = prom.get("global") or {}
    c.check(str(glob.get("scrape_interval")) == "10s", f"{rel}: scrape_interval is {glob.get('scrape_interval')}, expected 10s")
    jobs = {}
    for sc in prom.get("scrape_configs") or []:
        jobs[sc.get("job_name")] = sc
    c.check(sorted(jobs) == JOBS, f"{rel}: jobs are {sorted(map(str, jobs))}, expected {JOBS}")
    found = {}
    for job, sc in jobs.items():
        c.check(sc.get("metrics_path", "/metrics") == "/metrics", f"{rel}: {job}: metrics_path is not /metrics")
        interval = sc.get("scrape_interval")
        c.check(interval in (None, "10s"), f"{rel}: {job}: scrape_interval {interval}, expected 10s")
        for sd in sc.get("static_configs") or []:
            for t in sd.get("targets") or []:
                host, _, port = str(t).rpartition(":")
                if host in found:
                    c.fail(f"{rel}: {host} is scraped twice")
                found[host] = (job, port)
    c.check(set(found) == set(HANGAR_SERVICES),
            f"{rel}: targets name {sorted(found)}, expected exactly {sorted(HANGAR_SERVICES)}")
    for host, (job, port) in sorted(found.items()):
        if host not in HANGAR_SERVICES:
            continue
        c.check(job == HANGAR_SERVICES[host], f"{rel}: {host} is in job {job}, expected {HANGAR_SERVICES[host]}")
        want = (ports or {}).get(host)
        c.check(want is None or port == want,
                f"{rel}: {host}:{port}, but its config has the admin endpoint on port {want}")


def check_prometheus_local(c, prom, local_compose):
    if prom is None:
        return
    rel = PROMETHEUS_LOCAL
    glob = prom.get("global") or {}
    c.check(str(glob.get("scrape_interval")) == "10s", f"{rel}: scrape_interval is {glob.get('scrape_interval')}, expected 10s")
    jobs = {sc.get("job_name"): sc for sc in prom.get("scrape_configs") or []}
    c.check(sorted(jobs) == JOBS, f"{rel}: jobs are {sorted(map(str, jobs))}, expected {JOBS}")
    target_dir = None
    if local_compose is not None:
        prom_svc = (local_compose.get("services") or {}).get("prometheus") or {}
        for src, target in volume_mounts(prom_svc, raw=True):
            if "HANGAR_LOCAL_DIR" in src:
                target_dir = target
    for job, sc in jobs.items():
        files = [f for sd in sc.get("file_sd_configs") or [] for f in sd.get("files") or []]
        statics = [t for sd in sc.get("static_configs") or [] for t in sd.get("targets") or []]
        c.check(bool(files) or bool(statics), f"{rel}: {job}: no targets")
        for t in statics:
            c.check(str(t).startswith(("127.0.0.1:", "localhost:", "[::1]:")),
                    f"{rel}: {job}: target {t} is not on loopback")
        for f in files:
            c.check(target_dir is not None and os.path.dirname(f) == target_dir,
                    f"{rel}: {job}: reads {f}, outside the directory compose-local.yml mounts "
                    f"({target_dir or 'none'})")


def check_collector(c, col, override):
    if col is None:
        return
    rel = COLLECTOR
    protocols = ((col.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}
    grpc = (protocols.get("grpc") or {}).get("endpoint")
    http = (protocols.get("http") or {}).get("endpoint")
    c.check(grpc == "0.0.0.0:4317", f"{rel}: the OTLP gRPC receiver listens on {grpc}, expected 0.0.0.0:4317")
    c.check(http == "0.0.0.0:4318", f"{rel}: the OTLP HTTP receiver listens on {http}, expected 0.0.0.0:4318")
    exp = (col.get("exporters") or {}).get("otlp/jaeger") or {}
    c.check(exp.get("endpoint") == "jaeger:4317", f"{rel}: otlp/jaeger sends to {exp.get('endpoint')}, expected jaeger:4317")
    c.check(((exp.get("tls") or {}).get("insecure")) is True, f"{rel}: otlp/jaeger: tls.insecure is not true")
    service = col.get("service") or {}
    pipelines = service.get("pipelines") or {}
    traces = pipelines.get("traces")
    if not c.check(isinstance(traces, dict), f"{rel}: no traces pipeline"):
        return
    c.check("otlp" in (traces.get("receivers") or []), f"{rel}: the traces pipeline does not receive OTLP")
    c.check("batch" in (traces.get("processors") or []), f"{rel}: the traces pipeline has no batch processor")
    c.check("otlp/jaeger" in (traces.get("exporters") or []), f"{rel}: the traces pipeline does not export to Jaeger")
    for kind in ("receivers", "processors", "exporters"):
        defined = set((col.get(kind) or {}).keys())
        for pname, p in pipelines.items():
            for comp in (p or {}).get(kind) or []:
                c.check(comp in defined, f"{rel}: pipeline {pname} uses {kind[:-1]} {comp}, which is not defined")
    for ext in service.get("extensions") or []:
        c.check(ext in (col.get("extensions") or {}), f"{rel}: extension {ext} is used but not defined")


def check_grafana(c, datasources, providers, override, local_compose):
    uids = {}
    if datasources is not None:
        for ds in datasources.get("datasources") or []:
            uids[ds.get("uid")] = ds
        for uid, typ in (("prometheus", "prometheus"), ("jaeger", "jaeger")):
            ds = uids.get(uid)
            if c.check(ds is not None, f"{DATASOURCES}: no data source with uid `{uid}`"):
                c.check(ds.get("type") == typ, f"{DATASOURCES}: `{uid}` is of type {ds.get('type')}, expected {typ}")
        expected = {
            OVERRIDE: {"prometheus": "http://prometheus:9090", "jaeger": "http://jaeger:16686"},
            COMPOSE_LOCAL: {"prometheus": "http://127.0.0.1:9090", "jaeger": "http://127.0.0.1:16686"},
        }
        for rel, compose in ((OVERRIDE, override), (COMPOSE_LOCAL, local_compose)):
            if compose is None:
                continue
            env = env_map(((compose.get("services") or {}).get("grafana") or {}).get("environment"))
            for uid, want in expected[rel].items():
                ds = uids.get(uid)
                if ds is None:
                    continue
                got = expand(str(ds.get("url", "")), env)
                c.check(got == want, f"{DATASOURCES}: with {rel}'s Grafana, `{uid}` is at {got or 'nothing'}, expected {want}")
    if providers is not None:
        paths = [((p.get("options") or {}).get("path")) for p in providers.get("providers") or []]
        c.check(bool(paths) and all(paths), f"{DASHBOARD_PROVIDERS}: no dashboard provider with a path")
        for rel, compose, base_dir in ((OVERRIDE, override, ""), (COMPOSE_LOCAL, local_compose, TELEMETRY)):
            if compose is None:
                continue
            mounts = volume_mounts((compose.get("services") or {}).get("grafana") or {})
            by_target = {t: s for s, t in mounts}
            c.check("/etc/grafana/provisioning" in by_target and
                    os.path.normpath(os.path.join(base_dir, by_target["/etc/grafana/provisioning"]))
                    == os.path.normpath(f"{TELEMETRY}/grafana/provisioning"),
                    f"{rel}: grafana does not mount {TELEMETRY}/grafana/provisioning at /etc/grafana/provisioning")
            for path in paths:
                src = by_target.get(path)
                c.check(src is not None and os.path.normpath(os.path.join(base_dir, src))
                        == os.path.normpath(os.path.dirname(DASHBOARD)),
                        f"{rel}: grafana does not mount {os.path.dirname(DASHBOARD)} at {path}, where "
                        f"{DASHBOARD_PROVIDERS} looks for dashboards")
    return set(u for u in uids if u)


def check_compose_local(c, local):
    if local is None:
        return
    rel = COMPOSE_LOCAL
    services = local.get("services") or {}
    c.check(set(services) == set(TELEMETRY_SERVICES),
            f"{rel}: services are {sorted(services)}, expected {sorted(TELEMETRY_SERVICES)}")
    for name in TELEMETRY_SERVICES:
        svc = services.get(name) or {}
        c.check(svc.get("network_mode") == "host", f"{rel}: {name} is not on the host network")
        c.check(not svc.get("ports"), f"{rel}: {name} publishes ports, which the host network ignores")
    check_images(c, rel, services)
    check_mounts(c, rel, services, TELEMETRY)
    prom_mounts = {t: s for s, t in volume_mounts(services.get("prometheus") or {})}
    c.check(prom_mounts.get("/etc/prometheus/prometheus.yml", "").endswith("prometheus-local.yml"),
            f"{rel}: prometheus does not read prometheus-local.yml")
    cmd = " ".join(map(str, (services.get("prometheus") or {}).get("command") or []))
    c.check("--web.listen-address=127.0.0.1:9090" in cmd, f"{rel}: prometheus does not listen on 127.0.0.1:9090")
    grafana_env = env_map((services.get("grafana") or {}).get("environment"))
    c.check(grafana_env.get("GF_SERVER_HTTP_ADDR") == "127.0.0.1", f"{rel}: grafana does not listen on loopback")
    collector_cmd = " ".join(map(str, (services.get("otel-collector") or {}).get("command") or []))
    c.check("grpc::endpoint: 127.0.0.1:4317" in collector_cmd,
            f"{rel}: the collector's OTLP gRPC receiver is not on 127.0.0.1:4317")
    jaeger_env = env_map((services.get("jaeger") or {}).get("environment"))
    m = re.search(r"otlp/jaeger::endpoint: (\S+)", collector_cmd)
    c.check(m is not None and jaeger_env.get("COLLECTOR_OTLP_GRPC_HOST_PORT") == m.group(1),
            f"{rel}: the collector does not send to Jaeger's OTLP gRPC port "
            f"({jaeger_env.get('COLLECTOR_OTLP_GRPC_HOST_PORT')})")
    c.check(not str(jaeger_env.get("COLLECTOR_OTLP_GRPC_HOST_PORT", "")).endswith(":4317"),
            f"{rel}: Jaeger's OTLP receiver would take the collector's port 4317")


# ------------------------------------------------------------------------------ main


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names_file", nargs="?", help="metric names from a live scrape, one a line")
    ap.add_argument("--names-from-metrics", nargs="+", metavar="FILE",
                    help="Prometheus text exposition files to take the metric names from")
    ap.add_argument("--offline", action="store_true", help="skip the comparison with a live scrape")
    ap.add_argument("--list-metrics", action="store_true", help="print the metrics the dashboard uses and exit")
    ap.add_argument("--root", default=os.path.normpath(os.path.join(here, "..", "..")),
                    help="the repository's root (default: two levels above this script)")
    args = ap.parse_args()

    sources = sum(bool(x) for x in (args.names_file, args.names_from_metrics, args.offline))
    if not args.list_metrics and sources != 1:
        ap.print_usage(sys.stderr)
        print("check_stack: give exactly one of NAMES_FILE, --names-from-metrics FILE..., --offline",
              file=sys.stderr)
        return 2

    live, live_source = None, None
    try:
        if args.names_file:
            live, live_source = read_names_file(args.names_file), f"the scrape ({args.names_file})"
        elif args.names_from_metrics:
            live = set()
            for f in args.names_from_metrics:
                live |= read_exposition(f)
            live_source = f"the scrape ({', '.join(args.names_from_metrics)})"
    except OSError as e:
        print(f"check_stack: cannot read {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    if live is not None and not live:
        print(f"check_stack: no metric names in {live_source}", file=sys.stderr)
        return 2

    c = Checker(args.root)
    datasources = c.load_yaml(DATASOURCES)
    providers = c.load_yaml(DASHBOARD_PROVIDERS)
    override = c.load_yaml(OVERRIDE)
    local_compose = c.load_yaml(COMPOSE_LOCAL)
    base = c.load_yaml(BASE_COMPOSE)
    prom = c.load_yaml(PROMETHEUS)
    prom_local = c.load_yaml(PROMETHEUS_LOCAL)
    collector = c.load_yaml(COLLECTOR)

    uids = check_grafana(c, datasources, providers, override, local_compose)
    used = check_dashboard(c, uids, live, live_source)
    if args.list_metrics:
        for name in sorted(used or {}):
            print(name)
        return 0 if used else 1
    ports = check_compose(c, base, override)
    check_prometheus(c, prom, ports)
    check_prometheus_local(c, prom_local, local_compose)
    check_collector(c, collector, override)
    check_compose_local(c, local_compose)

    for f in c.failures:
        print(f"FAIL {f}")
    for n in c.notes:
        print(f"note: {n}")
    n_panels = used is not None and len({p for ps in used.values() for p in ps})
    print(f"check_stack: {c.checks} checks, {len(c.failures)} failed; "
          f"{len(used or {})} metric families in {n_panels or 0} panels and variables"
          + ("" if live is None else f", compared with {len(live)} names from {live_source}")
          + ("" if live is not None else " (no live scrape compared: --offline)"))
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
