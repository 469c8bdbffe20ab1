#!/usr/bin/env python3
"""Smoke test: drive a real `hangar server` with boto3.

Starts its own server on free ports in a temp dir, runs a list of checks,
stops the server with SIGTERM, and ends with "N passed, M failed".
Binary: $HANGAR_BIN, or <workspace>/target/debug/hangar.
"""

import hashlib
import io
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HANGAR_BIN = os.environ.get("HANGAR_BIN") or os.path.join(ROOT, "target", "debug", "hangar")
MIB = 1024 * 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `hangar server` child process and what it printed."""

    def __init__(self, workdir, web_port=None):
        """`web_port`: also serve the website endpoint there (`--web-addr`)."""
        self.data_dir = os.path.join(workdir, "data")
        os.makedirs(self.data_dir, exist_ok=True)
        self.s3_addr = f"127.0.0.1:{free_port()}"
        self.rpc_addr = f"127.0.0.1:{free_port()}"
        self.admin_addr = f"127.0.0.1:{free_port()}"
        self.web_addr = f"127.0.0.1:{web_port}" if web_port else None
        web_args = ["--web-addr", self.web_addr] if web_port else []
        self.log_path = os.path.join(workdir, "server.log")
        env = {k: v for k, v in os.environ.items() if not k.startswith("HANGAR_")}
        self.proc = subprocess.Popen(
            [HANGAR_BIN, "server", "--data-dir", self.data_dir, "--s3-addr", self.s3_addr,
             "--rpc-addr", self.rpc_addr, "--admin-addr", self.admin_addr, *web_args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=open(self.log_path, "wb"), env=env, text=True,
        )
        # A reader thread drains stdout for the server's whole life.
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(l) for l in self.proc.stdout] + [lines.put(None)],
                         daemon=True).start()
        self.vars = {}
        deadline = time.monotonic() + 60
        while "S3_ENDPOINT" not in self.vars:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.proc.kill()
                raise RuntimeError("server did not print S3_ENDPOINT:\n" + self.log_tail())
            line = line.strip()
            if line.startswith("export "):
                line = line[len("export "):]
            key, sep, value = line.partition("=")
            if sep:
                self.vars[key] = value
        self.endpoint = self.vars["S3_ENDPOINT"]
        self.access_key = self.vars["AWS_ACCESS_KEY_ID"]
        self.secret_key = self.vars["AWS_SECRET_ACCESS_KEY"]
        self.region = self.vars["AWS_DEFAULT_REGION"]

    def log_tail(self, n=40):
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-n:])

    def client(self, access_key=None, secret_key=None):
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=self.region,
            aws_access_key_id=access_key or self.access_key, aws_secret_access_key=secret_key or self.secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                          retries={"max_attempts": 1, "mode": "standard"}),
        )

    def cli(self, *args):
        env = {k: v for k, v in os.environ.items() if k != "HANGAR_ADMIN_TOKEN"}
        return subprocess.run([HANGAR_BIN, "--rpc-addr", self.rpc_addr, "--data-dir", self.data_dir, *args],
                              capture_output=True, text=True, timeout=60, env=env)

    def stop(self):
        os.kill(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout=30)


def error_code(fn):
    """Runs fn, expecting a ClientError; returns (code, http status)."""
    try:
        fn()
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError("call succeeded but an error was expected")


class Checks:
    """Runs named checks, reports each as `ok` or `FAIL` (with the traceback's end), counts."""

    def __init__(self):
        self.passed, self.failed = 0, 0

    def __call__(self, desc, fn):
        try:
            fn()
            self.passed += 1
            print(f"ok   - {desc}")
        except Exception:  # noqa: BLE001 - report any failure and continue
            self.failed += 1
            print(f"FAIL - {desc}")
            print("".join("     | " + l + "\n" for l in traceback.format_exc().rstrip().splitlines()[-12:]), end="")

    def finish(self, server):
        """Prints the summary line (and the server's log tail after a failure); the exit code."""
        if self.failed:
            print("# server log tail:")
            print("".join("# " + l for l in server.log_tail(30).splitlines(True)))
        print(f"{self.passed} passed, {self.failed} failed")
        return 0 if self.failed == 0 else 1


def run_with_server(name, run, **server_args):
    """A smoke script's main: starts a server in a temp dir, runs `run(server)`, kills the
    server if it is still up. The exit code."""
    if not os.access(HANGAR_BIN, os.X_OK):
        print(f"{name}: hangar binary not found at {HANGAR_BIN}", file=sys.stderr)
        print("0 passed, 1 failed")
        return 1
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost,.test"
    with tempfile.TemporaryDirectory(prefix=f"hangar-{name}-") as workdir:
        try:
            server = Server(workdir, **server_args)
        except RuntimeError as e:
            print(f"{name}: {e}", file=sys.stderr)
            print("0 passed, 1 failed")
            return 1
        try:
            return run(server)
        finally:
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait()


def main():
    return run_with_server("smoke-boto3", run_checks)


def run_checks(server):
    print(f"# hangar server pid {server.proc.pid} at {server.endpoint}")
    s3 = server.client()
    bucket = "boto-smoke"
    small = b"hello from boto3\n"
    big = os.urandom(11 * MIB + 5)
    check = Checks()

    def t_health():
        with urllib.request.urlopen(f"http://{server.admin_addr}/health", timeout=10) as r:
            assert r.status == 200 and r.read().strip() == b"ok"
        with urllib.request.urlopen(f"http://{server.admin_addr}/metrics", timeout=10) as r:
            assert re.search(rb"^hangar_", r.read(), re.M), "no hangar_ metrics"
    check("admin /health and /metrics", t_health)

    check("create_bucket", lambda: s3.create_bucket(Bucket=bucket))

    def t_list_buckets():
        names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
        assert bucket in names, names
    check("list_buckets shows the bucket", t_list_buckets)
    check("head_bucket", lambda: s3.head_bucket(Bucket=bucket))
    check("create_bucket again is BucketAlreadyOwnedByYou",
          lambda: assert_eq(error_code(lambda: s3.create_bucket(Bucket=bucket)), ("BucketAlreadyOwnedByYou", 409)))
    check("invalid bucket name is InvalidBucketName",
          lambda: assert_eq(error_code(lambda: s3.create_bucket(Bucket="Bad_Name"))[0], "InvalidBucketName"))

    def t_put_get():
        r = s3.put_object(Bucket=bucket, Key="hello.txt", Body=small, ContentType="text/plain",
                          Metadata={"color": "blue"}, CacheControl="no-cache")
        assert r["ETag"] == '"%s"' % hashlib.md5(small).hexdigest(), r["ETag"]
        g = s3.get_object(Bucket=bucket, Key="hello.txt")
        assert g["Body"].read() == small
        assert g["ContentType"] == "text/plain"
        assert g["Metadata"] == {"color": "blue"}, g["Metadata"]
        assert g["CacheControl"] == "no-cache"
        h = s3.head_object(Bucket=bucket, Key="hello.txt")
        assert h["ContentLength"] == len(small)
    check("put_object / get_object / head_object", t_put_get)

    def t_range():
        g = s3.get_object(Bucket=bucket, Key="hello.txt", Range="bytes=6-9")
        assert g["Body"].read() == small[6:10]
        assert g["ContentRange"] == f"bytes 6-9/{len(small)}", g["ContentRange"]
        assert error_code(lambda: s3.get_object(Bucket=bucket, Key="hello.txt", Range="bytes=1000-2000"))[0] \
            == "InvalidRange"
    check("ranged get_object", t_range)

    def t_conditional():
        etag = s3.head_object(Bucket=bucket, Key="hello.txt")["ETag"]
        assert error_code(lambda: s3.get_object(Bucket=bucket, Key="hello.txt", IfNoneMatch=etag))[1] == 304
        assert error_code(lambda: s3.get_object(Bucket=bucket, Key="hello.txt", IfMatch='"nope"')) \
            == ("PreconditionFailed", 412)
        assert s3.get_object(Bucket=bucket, Key="hello.txt", IfMatch=etag)["Body"].read() == small
    check("conditional get_object", t_conditional)

    check("get_object of a missing key is NoSuchKey",
          lambda: assert_eq(error_code(lambda: s3.get_object(Bucket=bucket, Key="missing")), ("NoSuchKey", 404)))
    check("missing bucket is NoSuchBucket",
          lambda: assert_eq(error_code(lambda: s3.list_objects_v2(Bucket="no-such-bucket"))[0], "NoSuchBucket"))

    def t_managed_transfer():
        cfg = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=4)
        s3.upload_fileobj(io.BytesIO(big), bucket, "big.bin", Config=cfg)
        h = s3.head_object(Bucket=bucket, Key="big.bin")
        assert h["ContentLength"] == len(big)
        assert h["ETag"].endswith('-3"'), h["ETag"]
        out = io.BytesIO()
        s3.download_fileobj(bucket, "big.bin", out, Config=cfg)
        assert out.getvalue() == big, "11 MiB object differs"
    check("upload_fileobj / download_fileobj (multipart, 11 MiB)", t_managed_transfer)

    def t_manual_multipart():
        parts_data = [os.urandom(5 * MIB), b"tail part"]
        up = s3.create_multipart_upload(Bucket=bucket, Key="mpu.bin")
        uid = up["UploadId"]
        listed = s3.list_multipart_uploads(Bucket=bucket)
        assert any(u["UploadId"] == uid for u in listed.get("Uploads", [])), listed
        parts = []
        for n, data in enumerate(parts_data, start=1):
            r = s3.upload_part(Bucket=bucket, Key="mpu.bin", UploadId=uid, PartNumber=n, Body=data)
            parts.append({"PartNumber": n, "ETag": r["ETag"]})
        assert len(s3.list_parts(Bucket=bucket, Key="mpu.bin", UploadId=uid)["Parts"]) == 2
        r = s3.complete_multipart_upload(Bucket=bucket, Key="mpu.bin", UploadId=uid,
                                         MultipartUpload={"Parts": parts})
        digest = hashlib.md5(b"".join(hashlib.md5(d).digest() for d in parts_data)).hexdigest()
        assert r["ETag"] == f'"{digest}-2"', r["ETag"]
        assert s3.get_object(Bucket=bucket, Key="mpu.bin")["Body"].read() == b"".join(parts_data)
        part2 = s3.get_object(Bucket=bucket, Key="mpu.bin", PartNumber=2)
        assert part2["Body"].read() == parts_data[1]
    check("manual multipart upload with ETag and partNumber", t_manual_multipart)

    def t_multipart_errors():
        uid = s3.create_multipart_upload(Bucket=bucket, Key="small-parts")["UploadId"]
        parts = []
        for n in (1, 2):
            r = s3.upload_part(Bucket=bucket, Key="small-parts", UploadId=uid, PartNumber=n, Body=b"x" * 1000)
            parts.append({"PartNumber": n, "ETag": r["ETag"]})
        complete = lambda p: s3.complete_multipart_upload(  # noqa: E731
            Bucket=bucket, Key="small-parts", UploadId=uid, MultipartUpload={"Parts": p})
        assert error_code(lambda: complete(parts))[0] == "EntityTooSmall"
        assert error_code(lambda: complete([{"PartNumber": 7, "ETag": parts[0]["ETag"]}]))[0] == "InvalidPart"
        s3.abort_multipart_upload(Bucket=bucket, Key="small-parts", UploadId=uid)
        assert error_code(lambda: s3.list_parts(Bucket=bucket, Key="small-parts", UploadId=uid))[0] == "NoSuchUpload"
    check("multipart errors and abort", t_multipart_errors)

    def t_copy():
        s3.copy_object(Bucket=bucket, Key="copy.txt", CopySource={"Bucket": bucket, "Key": "hello.txt"})
        g = s3.get_object(Bucket=bucket, Key="copy.txt")
        assert g["Body"].read() == small and g["Metadata"] == {"color": "blue"}
        s3.copy_object(Bucket=bucket, Key="copy.txt", CopySource={"Bucket": bucket, "Key": "hello.txt"},
                       MetadataDirective="REPLACE", Metadata={"color": "red"}, ContentType="text/x-red")
        h = s3.head_object(Bucket=bucket, Key="copy.txt")
        assert h["Metadata"] == {"color": "red"} and h["ContentType"] == "text/x-red", h
    check("copy_object (COPY and REPLACE)", t_copy)

    def t_list():
        for k in ("dir/a", "dir/b", "dir/sub/c", "other"):
            s3.put_object(Bucket=bucket, Key=k, Body=b"x")
        r = s3.list_objects_v2(Bucket=bucket, Prefix="dir/", Delimiter="/")
        assert [o["Key"] for o in r["Contents"]] == ["dir/a", "dir/b"], r
        assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["dir/sub/"], r
        keys = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, PaginationConfig={"PageSize": 2}):
            assert len(page.get("Contents", [])) <= 2
            keys += [o["Key"] for o in page.get("Contents", [])]
        assert keys == sorted(keys) and "dir/sub/c" in keys and len(keys) == len(set(keys)), keys
        v1 = []
        for page in s3.get_paginator("list_objects").paginate(Bucket=bucket, PaginationConfig={"PageSize": 3}):
            v1 += [o["Key"] for o in page.get("Contents", [])]
        assert v1 == keys, (v1, keys)
        enc = s3.list_objects_v2(Bucket=bucket, Prefix="dir/", EncodingType="url")
        assert [o["Key"] for o in enc["Contents"]] == ["dir/a", "dir/b", "dir/sub/c"], enc
    check("list_objects_v2 / list_objects with prefixes and paging", t_list)

    def t_delete_objects():
        r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "dir/a"}, {"Key": "dir/b"}, {"Key": "other"}]})
        assert sorted(d["Key"] for d in r["Deleted"]) == ["dir/a", "dir/b", "other"], r
        assert not r.get("Errors"), r
        left = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="dir/").get("Contents", [])]
        assert left == ["dir/sub/c"], left
    check("delete_objects", t_delete_objects)

    def t_presigned():
        url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "hello.txt"}, ExpiresIn=300)
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.read() == small
        put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "presigned.txt"},
                                            ExpiresIn=300)
        req = urllib.request.Request(put_url, data=b"via presigned PUT", method="PUT")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
        assert s3.get_object(Bucket=bucket, Key="presigned.txt")["Body"].read() == b"via presigned PUT"
    check("presigned GET and PUT URLs", t_presigned)

    def t_bad_credentials():
        bad = server.client(secret_key="0" * 64)
        assert error_code(lambda: bad.list_buckets())[0] == "SignatureDoesNotMatch"
        unknown = server.client(access_key="GK0000000000000000000000", secret_key="0" * 64)
        assert error_code(lambda: unknown.list_buckets())[0] == "InvalidAccessKeyId"
    check("wrong secret / unknown key are rejected", t_bad_credentials)

    def t_key_rights():
        out = server.cli("key", "create", "boto-user")
        assert out.returncode == 0, out.stderr
        key_id = re.search(r"^Key ID:\s*(\S+)", out.stdout, re.M).group(1)
        secret = re.search(r"^Secret key:\s*(\S+)", out.stdout, re.M).group(1)
        user = server.client(key_id, secret)
        assert user.list_buckets()["Buckets"] == []
        assert error_code(lambda: user.get_object(Bucket=bucket, Key="hello.txt"))[0] == "AccessDenied"
        out = server.cli("bucket", "allow", "--read", bucket, "--key", "boto-user")
        assert out.returncode == 0, out.stderr
        assert user.get_object(Bucket=bucket, Key="hello.txt")["Body"].read() == small
        assert error_code(lambda: user.put_object(Bucket=bucket, Key="nope", Body=b"x"))[0] == "AccessDenied"
    check("admin CLI key without rights, then bucket allow", t_key_rights)

    def t_sse_c():
        key = os.urandom(32)
        sse = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
        data = os.urandom(3 * MIB + 17)
        s3.put_object(Bucket=bucket, Key="secret.bin", Body=data, **sse)
        assert s3.get_object(Bucket=bucket, Key="secret.bin", **sse)["Body"].read() == data
        part = s3.get_object(Bucket=bucket, Key="secret.bin", Range="bytes=1048570-1048600", **sse)["Body"].read()
        assert part == data[1048570:1048601]
        assert error_code(lambda: s3.get_object(Bucket=bucket, Key="secret.bin")) == ("InvalidRequest", 400)
        other = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": os.urandom(32)}
        assert error_code(lambda: s3.get_object(Bucket=bucket, Key="secret.bin", **other)) == ("AccessDenied", 403)
        # upload_file takes the same arguments, multipart included.
        big = os.urandom(11 * MIB)
        s3.upload_fileobj(io.BytesIO(big), bucket, "secret-mp.bin", ExtraArgs=sse,
                          Config=TransferConfig(multipart_threshold=MIB * 5, multipart_chunksize=MIB * 5))
        out = io.BytesIO()
        s3.download_fileobj(bucket, "secret-mp.bin", out, ExtraArgs=sse)
        assert out.getvalue() == big
    check("SSE-C: put, get, range, refusals, upload_fileobj/download_fileobj", t_sse_c)

    def t_bucket_not_empty():
        assert error_code(lambda: s3.delete_bucket(Bucket=bucket)) == ("BucketNotEmpty", 409)
    check("delete_bucket on a non-empty bucket is BucketNotEmpty", t_bucket_not_empty)

    def t_cleanup():
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            objs = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if objs:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": objs, "Quiet": True})
        s3.delete_bucket(Bucket=bucket)
        assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    check("empty and delete the bucket", t_cleanup)

    check("SIGTERM stops the server with exit code 0", lambda: assert_eq(server.stop(), 0))

    return check.finish(server)


def assert_eq(got, want):
    assert got == want, f"got {got!r}, want {want!r}"


if __name__ == "__main__":
    sys.exit(main())
