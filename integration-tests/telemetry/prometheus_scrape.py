#!/usr/bin/env python3
"""A real Prometheus server scrapes a local cluster, and the Grafana dashboard's queries run
against it.

Starts scripts/local-cluster.sh (HANGAR_BIN, default target/release/hangar) with a
metrics token on every process, makes S3 traffic with boto3, and runs Debian's `prometheus`
on docker/telemetry/prometheus-local.yml (its targets: the files local-cluster.sh wrote; the
token given as Prometheus's bearer credentials). Checks that:

- promtool accepts both shipped Prometheus configurations;
- /metrics refuses a scrape without the token, and Prometheus's scrapes of all six
  processes succeed (`up` = 1) with it;
- the request counters Prometheus stored move with the traffic;
- every query of the dashboard (docker/telemetry/grafana/dashboards/hangar.json) is valid
  PromQL for this Prometheus, and the main panels return data;
- check_stack.py finds every metric the dashboard uses among those the processes expose.

What it leaves out: Grafana itself and the collector (their images cannot be pulled here).
"""

import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import boto3
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOKEN = "prometheus-scrape-token-0123456789"
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, token=None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def query(base, promql):
    status, body = get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    return status, json.loads(body)


def wait(what, seconds, fn):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if fn():
            return True
        time.sleep(1)
    print(f"timed out waiting for {what}")
    return False


def dashboard_exprs():
    dash = json.loads((ROOT / "docker/telemetry/grafana/dashboards/hangar.json").read_text())
    panels = []

    def walk(ps):
        for p in ps:
            panels.append(p)
            walk(p.get("panels", []))

    walk(dash["panels"])
    for p in panels:
        for t in p.get("targets", []):
            if t.get("expr"):
                yield p.get("title", "?"), t["expr"]


def grafana_to_prometheus(expr):
    """Grafana's variables, replaced as Grafana would for a 10 s scrape interval."""
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "10s")
        .replace("$__range", "5m")
        .replace("$job", ".*")
        .replace("$instance", ".*")
    )


def main():
    prometheus = shutil.which("prometheus")
    promtool = shutil.which("promtool")
    if not prometheus or not promtool:
        print("prometheus and promtool are needed (Debian's `prometheus` package)")
        return 1
    for conf in ["prometheus.yml", "prometheus-local.yml"]:
        r = subprocess.run([promtool, "check", "config", "--syntax-only", str(ROOT / "docker/telemetry" / conf)],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"promtool accepts docker/telemetry/{conf} {r.stdout.strip()} {r.stderr.strip()}")

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="hangar-prometheus-"))
    cluster = tmp / "cluster"
    env = dict(os.environ, HANGAR_ADMIN_METRICS_TOKEN=TOKEN)
    up = subprocess.run(["bash", str(ROOT / "scripts/local-cluster.sh"), "up", str(cluster)],
                        capture_output=True, text=True, env=env)
    prom = None
    try:
        if up.returncode != 0:
            print(up.stderr)
            check(False, "local cluster started")
            return 1
        exports = dict(re.findall(r"^export (\w+)=(.*)$", up.stdout, re.M))

        # The token is required.
        targets = {role: json.loads((cluster / "prometheus" / f"{role}.json").read_text())
                   for role in ["control-plane", "data-node", "s3-frontend"]}
        addrs = [t["targets"][0] for groups in targets.values() for t in groups]
        check(len(addrs) == 6, f"local-cluster.sh wrote six targets: {addrs}")
        for a in addrs:
            check(get(f"http://{a}/metrics")[0] == 401, f"{a}/metrics refuses a scrape without the token")

        # Prometheus on the shipped configuration, pointed at this cluster, with the token.
        conf = yaml.safe_load((ROOT / "docker/telemetry/prometheus-local.yml").read_text())
        conf["global"]["scrape_interval"] = "2s"
        conf["global"]["scrape_timeout"] = "2s"
        (tmp / "token").write_text(TOKEN)
        for job in conf["scrape_configs"]:
            job["authorization"] = {"type": "Bearer", "credentials_file": str(tmp / "token")}
            for sd in job["file_sd_configs"]:
                sd["files"] = [f.replace("/etc/prometheus/hangar", str(cluster / "prometheus")) for f in sd["files"]]
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(conf))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = open(tmp / "prometheus.log", "w")
        prom = subprocess.Popen([prometheus, f"--config.file={tmp / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=log, stderr=subprocess.STDOUT)

        def all_up():
            try:
                status, body = get(f"{base}/api/v1/targets")
            except OSError:
                return False
            if status != 200:
                return False
            active = json.loads(body)["data"]["activeTargets"]
            return len(active) == 6 and all(t["health"] == "up" for t in active)

        ok = wait("six healthy targets", 60, all_up)
        if not ok:
            print(get(f"{base}/api/v1/targets")[1] if prom.poll() is None else (tmp / "prometheus.log").read_text())
        check(ok, "Prometheus scrapes all six processes with the token (health up)")

        # Traffic through both frontends.
        s3 = [boto3.client("s3", endpoint_url=exports[e], aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
                           aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
              for e in ["S3_ENDPOINT", "S3_ENDPOINT_2"]]
        for i in range(20):
            s3[i % 2].put_object(Bucket="demo", Key=f"obj-{i}", Body=os.urandom(64 * 1024))
        for i in range(10):
            s3[i % 2].get_object(Bucket="demo", Key=f"obj-{i}")["Body"].read()
        for i in range(4):
            try:
                s3[0].get_object(Bucket="demo", Key=f"missing-{i}")
            except s3[0].exceptions.NoSuchKey:
                pass

        def counted():
            _, r = query(base, 'sum(api_s3_request_counter{api_endpoint="PutObject"})')
            res = r["data"]["result"]
            return bool(res) and float(res[0]["value"][1]) >= 20

        check(wait("the PUTs in Prometheus", 30, counted), "Prometheus stored api_s3_request_counter{PutObject} >= 20")

        # The 404s came after the PUTs: a scrape may have taken the PUTs and not yet them.
        def not_found():
            _, r = query(base, 'sum(api_s3_error_counter{api_endpoint="GetObject",status_code="404"})')
            res = r["data"]["result"]
            return bool(res) and float(res[0]["value"][1]) >= 4

        check(wait("the 404s in Prometheus", 30, not_found), "Prometheus stored the 404s of GetObject (>= 4)")
        _, r = query(base, "sum(block_bytes_written)")
        res = r["data"]["result"]
        check(bool(res) and float(res[0]["value"][1]) >= 20 * 64 * 1024, f"block bytes written: {res}")
        # Cluster health as the frontends and the control plane see it (data nodes report none).
        def healthy():
            _, r = query(base, "cluster_healthy")
            res = r["data"]["result"]
            return len(res) == 3 and all(float(x["value"][1]) == 1 for x in res)

        check(wait("cluster_healthy from three processes", 30, healthy),
              f"cluster_healthy is 1 from the two frontends and the control plane: {query(base, 'cluster_healthy')[1]}")
        # A rate needs two scrapes after the traffic.
        time.sleep(5)

        # Every dashboard query is valid for this Prometheus; the main panels have data.
        with_data = set()
        n = 0
        for title, expr in dashboard_exprs():
            n += 1
            status, r = query(base, grafana_to_prometheus(expr))
            check(status == 200 and r.get("status") == "success", f"panel `{title}`: {expr} -> {r.get('error', 'ok')}")
            if r.get("data", {}).get("result"):
                with_data.add(title)
        print(f"{n} dashboard queries run, {len(with_data)} panels with data")
        for must in ["S3 requests per second by operation", "Cluster healthy", "Block bytes written / read per second"]:
            matching = [t for t in with_data if t.lower() == must.lower()]
            check(bool(matching), f"panel `{must}` has data (panels with data: {sorted(with_data)})")
        _, r = query(base, 'sum(rate(block_bytes_written[1m]))')
        res = r["data"]["result"]
        check(bool(res) and float(res[0]["value"][1]) > 0, f"the disk-writes panel's rate is above 0: {res}")

        # The metrics the dashboard uses are all exposed by the processes.
        dumps = []
        for a in addrs:
            status, body = get(f"http://{a}/metrics", TOKEN)
            f = tmp / f"{a.replace(':', '_')}.prom"
            f.write_text(body)
            dumps.append(str(f))
        r = subprocess.run([sys.executable, str(ROOT / "integration-tests/telemetry/check_stack.py"),
                            "--names-from-metrics", *dumps], capture_output=True, text=True)
        print(r.stdout[-2000:], r.stderr[-2000:])
        check(r.returncode == 0, "check_stack.py: every dashboard metric is exposed by the processes")
    finally:
        if prom:
            prom.terminate()
            prom.wait(timeout=30)
        subprocess.run(["bash", str(ROOT / "scripts/local-cluster.sh"), "down", str(cluster)], capture_output=True)
        if not failures:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp} (logs of the cluster and of Prometheus)")
    print(f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
