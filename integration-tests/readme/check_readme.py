#!/usr/bin/env python3
"""Runs every ```sh block of README.md as written, in order, as a new user would.

- The block that starts the server (`... -- server`) runs in the background, as in a first
  terminal; the `export` lines it prints are then run in the session, as the README says to
  paste them.
- The README's test command is not run again here: it must be the command `.ci/run` runs
  (checked), which is where it runs.
- Every other block runs in one bash session (a second terminal), from the repository's
  directory, with `set -euo pipefail`: any command that fails fails the check.

Needs the aws CLI, Docker and docker-compose (the containerised cluster), and ports
3900-3903 free; refuses to run over an existing ./hangar-data or
/tmp/hangar-cluster. Stops everything it started (by process group) and removes what it made.
"""

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TEST_COMMAND = "cargo test --workspace"
CLUSTER_DIR = "/tmp/hangar-cluster"


def blocks(readme):
    return [body.strip("\n") for lang, body in re.findall(r"```(\w*)\n(.*?)```", readme, re.S) if lang == "sh"]


def cluster_processes():
    """PIDs of processes whose command line names the local cluster's directory."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if CLUSTER_DIR in cmd and "hangar" in cmd and int(pid) != os.getpid():
            found.append((int(pid), cmd.strip()))
    return found


def fail(msg):
    print(f"not ok - {msg}", flush=True)
    sys.exit(1)


def main():
    os.chdir(ROOT)
    with open("README.md") as f:
        sh = blocks(f.read())
    if not sh:
        fail("README.md has no sh blocks")
    for path in ["hangar-data", CLUSTER_DIR]:
        if os.path.exists(path):
            fail(f"{path} exists already; remove it first (this check starts from a fresh machine's state)")

    server_blocks = [b for b in sh if re.search(r"-- server\s*$", b)]
    if len(server_blocks) != 1:
        fail(f"expected one block starting the server, found {len(server_blocks)}")
    with open(".ci/run") as f:
        ci = f.read()
    if TEST_COMMAND not in sh:
        fail(f"the README's test command is not `{TEST_COMMAND}`")
    if TEST_COMMAND not in ci:
        fail(f".ci/run does not run the README's test command `{TEST_COMMAND}`")
    print(f"ok   - the test command `{TEST_COMMAND}` is the one .ci/run runs", flush=True)

    server = None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HANGAR_", "AWS_", "S3_"))}
    # An http endpoint: a CA bundle from the environment has nothing to verify.
    env.pop("AWS_CA_BUNDLE", None)
    os.makedirs(os.path.join(ROOT, "target"), exist_ok=True)
    log = open(os.path.join(ROOT, "target", "readme-server.log"), "w")
    try:
        print(f"# first terminal: {server_blocks[0]}", flush=True)
        server = subprocess.Popen(
            ["bash", "-c", server_blocks[0]], stdout=subprocess.PIPE, stderr=log, text=True, env=env,
            start_new_session=True,
        )
        # A reader thread, so a server that hangs silently cannot block the check.
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(l) for l in server.stdout] + [lines.put(None)], daemon=True).start()
        exports = []
        deadline = time.monotonic() + 1800  # includes the release build
        while len(exports) < 4:
            try:
                line = lines.get(timeout=max(1, deadline - time.monotonic()))
            except queue.Empty:
                fail("the server printed no export lines within 30 minutes")
            if line is None:
                fail("the server exited before printing its export lines; see target/readme-server.log")
            if line.startswith("export "):
                exports.append(line.strip())
        print(f"ok   - the server printed {len(exports)} export lines", flush=True)

        session = ["set -euo pipefail", "set -x", *exports]
        for b in sh:
            if b in server_blocks or b == TEST_COMMAND:
                continue
            session.append(b)
        script = "\n".join(session) + "\n"
        print("# second terminal:", flush=True)
        run = subprocess.run(["bash", "-c", script], env=env, cwd=ROOT)
        if run.returncode != 0:
            fail(f"a README block failed (exit {run.returncode}); the trace above shows which command")
        print("ok   - every README block ran as written", flush=True)
        left = cluster_processes()
        if left:
            fail(f"processes of the local cluster outlived `down`: {left}")
        print("ok   - `local-cluster.sh down` stopped every cluster process, restarted ones included", flush=True)
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        # The compose cluster's block ends with `down`; after a failure, remove it here.
        if os.path.exists(os.path.join(ROOT, "target", "compose", "cluster.env")):
            subprocess.run(["scripts/compose-cluster.sh", "down"], cwd=ROOT)
        if os.path.exists(os.path.join(CLUSTER_DIR)):
            subprocess.run(["scripts/local-cluster.sh", "down", CLUSTER_DIR], cwd=ROOT)
            shutil.rmtree(CLUSTER_DIR, ignore_errors=True)
        shutil.rmtree(os.path.join(ROOT, "hangar-data"), ignore_errors=True)
        for f in ["hello.txt", "big.bin", "first100.bin"]:
            if os.path.exists(os.path.join(ROOT, f)):
                os.remove(os.path.join(ROOT, f))


if __name__ == "__main__":
    main()
