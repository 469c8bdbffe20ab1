#!/usr/bin/env python3
"""Smoke test: s3fs (fsspec's S3 filesystem, the one pandas and Dask use) against a real
`hangar server`: write a tree, list it, delete a directory and then the whole bucket
recursively. s3fs asks for the bucket's versioning before it deletes, and deletes nothing
when that question fails.

Run with s3fs importable (`.ci/run` installs it apart, with `pip --target`, because its
aiobotocore pins a botocore of its own). Ends with "N passed, M failed".
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smoke_boto3 import Checks, run_with_server  # noqa: E402

import s3fs  # noqa: E402


def main():
    return run_with_server("smoke-s3fs", run_checks)


def run_checks(server):
    print(f"# hangar server pid {server.proc.pid} at {server.endpoint}; s3fs {s3fs.__version__}")
    fs = s3fs.S3FileSystem(
        key=server.access_key, secret=server.secret_key,
        client_kwargs={"endpoint_url": server.endpoint, "region_name": server.region},
        config_kwargs={"s3": {"addressing_style": "path"}},
    )
    bucket = "s3fs-smoke"
    files = {f"{bucket}/a.txt": b"a", f"{bucket}/dir/b.txt": b"b" * 1000, f"{bucket}/dir/sub/c.txt": b"c",
             f"{bucket}/other/d.txt": b"d"}
    check = Checks()

    def t_write():
        fs.mkdir(bucket)
        fs.pipe(files)
        assert sorted(fs.find(bucket)) == sorted(files), fs.find(bucket)
        assert fs.cat(f"{bucket}/dir/b.txt") == b"b" * 1000
    check("mkdir, pipe a tree, find and cat it", t_write)

    def t_ls():
        names = sorted(p.rstrip("/") for p in fs.ls(bucket, refresh=True))
        assert names == [f"{bucket}/a.txt", f"{bucket}/dir", f"{bucket}/other"], names
    check("ls shows files and directories", t_ls)

    def t_rm_dir():
        fs.rm(f"{bucket}/dir", recursive=True)
        fs.invalidate_cache()
        assert sorted(fs.find(bucket)) == [f"{bucket}/a.txt", f"{bucket}/other/d.txt"], fs.find(bucket)
    check("rm of a directory, recursive", t_rm_dir)

    def t_rm_bucket():
        fs.rm(bucket, recursive=True)
        fs.invalidate_cache()
        names = [b["Name"] for b in server.client().list_buckets()["Buckets"]]
        assert bucket not in names, names
    check("rm of the whole bucket, recursive: its objects and the bucket go", t_rm_bucket)

    return check.finish(server)


if __name__ == "__main__":
    sys.exit(main())
