#!/usr/bin/env python3
"""Multi-host tests: the compose cluster (compose.yml) in containers on a private network.

Starts it with scripts/compose-cluster.sh under a project name of its own, then:

1. writes and reads through both frontends with the aws CLI (each object read back through
   the other frontend);
2. `docker stop`s a data node: reads and writes continue through both frontends; starts it;
3. `docker network disconnect`s a data node, writes, reconnects it, and waits until that
   node holds the new objects' blocks (which it fetches only once anti-entropy has given it
   their metadata);
4. restarts every container one by one while a writer runs through both frontends (a
   failed write is retried once, on the other frontend): no write may fail twice, and
   every acknowledged write must be read back;
5. reads every object of every step through both frontends, byte for byte.

Needs docker, docker-compose, the aws CLI and boto3. HANGAR_BIN names the binary the image
is built from (default: target/release/hangar, built if needed). Ends with
"N passed, M failed" and a non-zero exit on any failure; the cluster is removed either way.
"""

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import boto3
from botocore.config import Config

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "scripts", "compose-cluster.sh")
BUCKET = "demo"
# Anti-entropy every 10 s instead of 600 s, so the reconnected node catches up in the test.
ANTI_ENTROPY_SECS = "10"
# Every request must be answered within this long, a node stopped or cut off included: a
# request that waits out an internal call's timeout (30 s) on an unreachable node fails.
CLIENT_TIMEOUT = 15


def compose_command():
    """The Compose plugin where the Docker CLI has it, else docker-compose (as the script)."""
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True)
    return ["docker", "compose"] if plugin.returncode == 0 else ["docker-compose"]


COMPOSE = compose_command()


class Cluster:
    """The compose cluster of this test run."""

    def __init__(self, workdir):
        self.project = f"hangar-mh-{os.getpid()}"
        self.env = dict(os.environ, HANGAR_COMPOSE_DIR=workdir, COMPOSE_PROJECT_NAME=self.project,
                        HANGAR_ANTI_ENTROPY_INTERVAL_SECS=ANTI_ENTROPY_SECS)
        self.env_file = os.path.join(workdir, "cluster.env")

    def up(self):
        out = subprocess.run(["bash", SCRIPT, "up"], env=self.env, check=True, capture_output=True, text=True,
                             timeout=1800)
        sys.stderr.write(out.stderr)
        self.exports = dict(re.findall(r"^export (\w+)=(.*)$", out.stdout, re.M))
        missing = {"S3_ENDPOINT", "S3_ENDPOINT_2", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                   "AWS_DEFAULT_REGION", "HANGAR_RPC_ADDR", "HANGAR_ADMIN_TOKEN"} - set(self.exports)
        assert not missing, f"compose-cluster.sh up printed no {missing}: {out.stdout}"
        self.endpoints = [self.exports["S3_ENDPOINT"], self.exports["S3_ENDPOINT_2"]]
        # No retries inside the CLI: a request that fails or times out fails the test.
        self.client_env = dict(os.environ, **self.exports, AWS_MAX_ATTEMPTS="1", AWS_RETRY_MODE="standard")

    def down(self):
        subprocess.run(["bash", SCRIPT, "down"], env=self.env, capture_output=True, timeout=300)

    def compose(self, *args, check=True):
        cmd = [*COMPOSE, "-p", self.project, "-f", os.path.join(ROOT, "compose.yml"),
               "--env-file", self.env_file, *args]
        return subprocess.run(cmd, env=self.env, check=check, capture_output=True, text=True, timeout=300)

    def container(self, service):
        return self.compose("ps", "-q", service).stdout.strip()

    def docker(self, *args):
        return subprocess.run(["docker", *args], check=True, capture_output=True, text=True, timeout=300).stdout

    def network(self):
        return f"{self.project}_hangar"

    def hangar(self, *args):
        """The image's CLI inside the control plane's container."""
        return self.compose("exec", "-T", "control-plane", "/hangar", "-c", "/etc/hangar/hangar.toml", *args).stdout

    def wait_healthy(self, service, timeout=120):
        cid = self.container(service)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.docker("inspect", "--format", "{{.State.Status}} {{.State.Health.Status}}", cid).split()
            if state == ["running", "healthy"]:
                return
            time.sleep(0.5)
        logs = self.compose("logs", "--tail", "40", service, check=False).stdout
        raise AssertionError(f"{service} not healthy after {timeout} s (state {state}):\n{logs}")

    def node_id(self, hostname):
        """The node id `hangar status` shows for a data node's hostname."""
        for line in self.hangar("status").splitlines():
            cols = line.split()
            if hostname in cols:
                return cols[0]
        raise AssertionError(f"`hangar status` lists no {hostname}")

    def aws(self, endpoint, *args, stdin=None):
        return subprocess.run(["aws", "--endpoint-url", endpoint, "--cli-read-timeout", str(CLIENT_TIMEOUT),
                               "--cli-connect-timeout", "5", "s3api", *args], env=self.client_env, check=True,
                              capture_output=True, timeout=120, input=stdin)


def body(key, size):
    """Content only `key` has, `size` bytes long."""
    seed = hashlib.sha256(key.encode()).digest()
    out = bytearray()
    while len(out) < size:
        seed = hashlib.sha256(seed).digest()
        out += seed
    return bytes(out[:size])


class Objects:
    """Every object written, by key, with its content's MD5."""

    def __init__(self):
        self.md5 = {}
        self.lock = threading.Lock()

    def add(self, key, data):
        with self.lock:
            self.md5[key] = hashlib.md5(data).hexdigest()


def put_cli(c, endpoint, key, data, objects, workdir):
    path = os.path.join(workdir, "upload")
    with open(path, "wb") as f:
        f.write(data)
    c.aws(endpoint, "put-object", "--bucket", BUCKET, "--key", key, "--body", path)
    objects.add(key, data)


def get_cli(c, endpoint, key, workdir):
    path = os.path.join(workdir, "download")
    c.aws(endpoint, "get-object", "--bucket", BUCKET, "--key", key, path)
    with open(path, "rb") as f:
        return f.read()


def check_through_both(c, objects, keys, workdir):
    """Each object read through both frontends with the aws CLI."""
    for key in keys:
        for ep in c.endpoints:
            got = get_cli(c, ep, key, workdir)
            assert hashlib.md5(got).hexdigest() == objects.md5[key], f"{key} through {ep}: wrong content"


def s3_clients(c):
    """A boto3 client per frontend that does not retry by itself."""
    cfg = Config(retries={"total_max_attempts": 1}, connect_timeout=3, read_timeout=CLIENT_TIMEOUT,
                 s3={"addressing_style": "path"})
    return [boto3.client("s3", endpoint_url=ep, config=cfg,
                         aws_access_key_id=c.exports["AWS_ACCESS_KEY_ID"],
                         aws_secret_access_key=c.exports["AWS_SECRET_ACCESS_KEY"],
                         region_name=c.exports["AWS_DEFAULT_REGION"]) for ep in c.endpoints]


def check_many_through_both(c, objects, keys):
    """Each object read through both frontends with boto3 (faster than a CLI process per read)."""
    for client, ep in zip(s3_clients(c), c.endpoints):
        for key in keys:
            got = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            assert hashlib.md5(got).hexdigest() == objects.md5[key], f"{key} through {ep}: wrong content"


def test_both_frontends(c, objects, workdir):
    keys = []
    # Sizes around the 1 MiB block: one block, several, an empty object.
    for i, size in enumerate([0, 1, 4096, 1024 * 1024, 3 * 1024 * 1024 + 17]):
        for n, ep in enumerate(c.endpoints):
            key = f"both/{n}/{i}"
            put_cli(c, ep, key, body(key, size), objects, workdir)
            keys.append(key)
    check_through_both(c, objects, keys, workdir)
    for ep in c.endpoints:
        listed = c.aws(ep, "list-objects-v2", "--bucket", BUCKET, "--prefix", "both/",
                       "--query", "length(Contents)", "--output", "text").stdout.decode().strip()
        assert listed == str(len(keys)), f"listing through {ep}: {listed} keys, {len(keys)} written"
    return f"{len(keys)} objects written and read through both frontends, listed by each"


def test_stopped_data_node(c, objects, workdir):
    cid = c.container("data2")
    c.docker("stop", "-t", "20", cid)
    try:
        earlier = sorted(objects.md5)
        check_many_through_both(c, objects, earlier)
        keys = []
        for i in range(10):
            key = f"stopped/{i}"
            put_cli(c, c.endpoints[i % 2], key, body(key, 64 * 1024 + i), objects, workdir)
            keys.append(key)
        check_through_both(c, objects, keys, workdir)
    finally:
        c.docker("start", cid)
    c.wait_healthy("data2")
    return f"data2 stopped: {len(earlier)} earlier objects read and {len(keys)} written through both frontends"


def test_disconnected_data_node(c, objects, workdir):
    cid = c.container("data3")
    data3 = c.node_id("data3")
    network = c.network()
    c.docker("network", "disconnect", network, cid)
    keys = []
    try:
        for i in range(12):
            key = f"partitioned/{i}"
            put_cli(c, c.endpoints[i % 2], key, body(key, 64 * 1024 + i), objects, workdir)
            keys.append(key)
        check_through_both(c, objects, keys, workdir)
    finally:
        c.docker("network", "connect", "--alias", "data3", network, cid)
    # Each object (above the 16 KiB inline bound, below the block size) is one block named
    # by its blake2b-256 hash; data3 must come to hold all.
    hashes = {k: hashlib.blake2b(body(k, 64 * 1024 + i), digest_size=32).hexdigest() for i, k in enumerate(keys)}
    missing = set(keys)
    deadline = time.monotonic() + 180
    while missing and time.monotonic() < deadline:
        for key in sorted(missing):
            info = c.hangar("block", "info", hashes[key])
            if re.search(rf"^{re.escape(data3)}\s+yes\s+yes\s*$", info, re.M):
                missing.discard(key)
        if missing:
            time.sleep(2)
    assert not missing, f"data3 did not catch up within 180 s: {len(missing)} of {len(keys)} blocks missing"
    return f"data3 disconnected during {len(keys)} writes, holds every block after reconnecting"


class Writer(threading.Thread):
    """Writes new objects through both frontends until stopped. A failed write is retried
    once, at once, through the other frontend; a write that fails both times is a failure."""

    def __init__(self, c, objects):
        super().__init__(daemon=True)
        self.clients = s3_clients(c)
        self.objects = objects
        self.stop = threading.Event()
        self.acked = 0
        self.retried = 0
        self.failures = []

    def run(self):
        i = 0
        while not self.stop.is_set():
            key = f"rolling/{i}"
            data = body(key, 1000 + (i * 7919) % 200_000)
            errors = []
            for attempt in range(2):
                try:
                    self.clients[(i + attempt) % 2].put_object(Bucket=BUCKET, Key=key, Body=data)
                    self.objects.add(key, data)
                    self.acked += 1
                    self.retried += attempt
                    break
                except Exception as e:  # any failure: connection refused, 5xx, timeout
                    errors.append(f"{type(e).__name__}: {e}")
            else:
                self.failures.append(f"{key}: {errors}")
            i += 1


def test_rolling_restart(c, objects, workdir):
    writer = Writer(c, objects)
    writer.start()
    order = ["control-plane", "data1", "data2", "data3", "s3-1", "s3-2"]
    try:
        time.sleep(3)
        for service in order:
            before = writer.acked
            c.docker("restart", "-t", "20", c.container(service))
            c.wait_healthy(service)
            # Let the writer go on with the restarted container before taking the next down.
            time.sleep(3)
            assert writer.acked > before, f"no write acknowledged while {service} restarted"
            assert not writer.failures, f"writes failed twice while {service} restarted: {writer.failures[:3]}"
    finally:
        writer.stop.set()
        writer.join(60)
    assert not writer.failures, f"writes failed twice: {writer.failures[:3]}"
    rolled = sorted(k for k in objects.md5 if k.startswith("rolling/"))
    check_many_through_both(c, objects, rolled)
    return (f"{len(order)} containers restarted one by one; {writer.acked} writes acknowledged "
            f"({writer.retried} after one retry), none failed twice, all read back through both frontends")


def test_everything_intact(c, objects, workdir):
    keys = sorted(objects.md5)
    check_many_through_both(c, objects, keys)
    return f"all {len(keys)} objects intact through both frontends"


def main():
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="hangar-multi-host-") as workdir:
        c = Cluster(workdir)
        try:
            c.up()
        except Exception as e:  # the cluster is removed whatever stopped `up`
            print(f"FAIL cluster did not start: {e} {getattr(e, 'stderr', '')}")
            c.down()
            sys.exit(1)
        objects = Objects()
        try:
            for test in [test_both_frontends, test_stopped_data_node, test_disconnected_data_node,
                         test_rolling_restart, test_everything_intact]:
                start = time.monotonic()
                try:
                    what = test(c, objects, workdir)
                    print(f"ok   {test.__name__} ({time.monotonic() - start:.0f} s): {what}", flush=True)
                    passed += 1
                except Exception as e:
                    detail = e.stderr.decode(errors="replace") if isinstance(getattr(e, "stderr", None), bytes) \
                        else (e.stderr or "") if isinstance(e, subprocess.CalledProcessError) else ""
                    print(f"FAIL {test.__name__}: {e} {detail}", flush=True)
                    traceback.print_exc()
                    failed += 1
        finally:
            if failed:
                print(c.compose("logs", "--tail", "60", check=False).stdout)
            c.down()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
