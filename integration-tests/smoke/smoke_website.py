#!/usr/bin/env python3
"""Smoke test: a static website served by `hangar server --web-addr`, set up with boto3 and
the `hangar` CLI, loaded with curl and with a real browser (headless Chromium).

The site (bucket `site.test`) has an index, an error page and a routing rule; its page
fetches `data.json` from two other websites: `api.test`, whose CORS rules allow the site's
origin, and `closed.test`, which has none. Chromium must show the first and be refused the
second. Host names under `.test` are mapped to 127.0.0.1 (curl's --resolve, Chromium's
--host-resolver-rules). Ends with "N passed, M failed". Binary: $HANGAR_BIN, or
<workspace>/target/debug/hangar; Chromium: $CHROMIUM or `chromium`.
"""

import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smoke_boto3 import Checks, free_port, run_with_server  # noqa: E402

# Ports Chromium refuses to connect to (net/base/port_util.cc), above 1024.
UNSAFE_PORTS = {1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667, 6668,
                6669, 6679, 6697, 10080}


def browser_port():
    while True:
        p = free_port()
        if p not in UNSAFE_PORTS:
            return p


def curl(port, host, path, *args):
    """(status, headers dict, body) of a request to the website endpoint as `host`."""
    out = subprocess.run(
        ["curl", "-s", "-i", "--noproxy", "*", "--resolve", f"{host}:{port}:127.0.0.1", *args,
         f"http://{host}:{port}{path}"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    return status, headers, body


def chromium_dom(chromium, url, profile):
    """The DOM Chromium has for `url` once the page and its scripts are done."""
    out = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-proxy-server",
         f"--user-data-dir={profile}", "--host-resolver-rules=MAP *.test 127.0.0.1",
         "--virtual-time-budget=10000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )
    if out.returncode != 0:
        raise AssertionError(f"chromium exited {out.returncode}: {out.stderr[-2000:]}")
    return out.stdout


PAGE = """<!doctype html>
<html><head><title>hangar site</title></head>
<body><p>the index page</p><div id="out">loading</div>
<script>
const get = (host) => fetch('http://' + host + ':PORT/data.json').then(r => r.text()).catch(() => 'blocked');
Promise.all([get('api.test'), get('closed.test')]).then(([api, closed]) => {
  document.getElementById('out').textContent = 'api=' + api.trim() + ';closed=' + closed.trim();
});
</script></body></html>
"""


def main():
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium or not shutil.which("curl"):
        print("smoke_website: needs chromium and curl", file=sys.stderr)
        print("0 passed, 1 failed")
        return 1
    port = browser_port()

    def run(server):
        with tempfile.TemporaryDirectory(prefix="hangar-chromium-") as profile:
            return run_checks(server, port, chromium, profile)

    return run_with_server("smoke-website", run, web_port=port)


def run_checks(server, port, chromium, profile):
    print(f"# hangar server pid {server.proc.pid}, website endpoint {server.web_addr}")
    s3 = server.client()
    check = Checks()

    def setup():
        for b in ["site.test", "api.test", "closed.test"]:
            s3.create_bucket(Bucket=b)
        html = "text/html"
        s3.put_object(Bucket="site.test", Key="index.html", Body=PAGE.replace("PORT", str(port)), ContentType=html)
        s3.put_object(Bucket="site.test", Key="404.html", Body="<p>custom not found</p>", ContentType=html)
        s3.put_object(Bucket="site.test", Key="new/page.html", Body="<p>the new page</p>", ContentType=html)
        s3.put_bucket_website(Bucket="site.test", WebsiteConfiguration={
            "IndexDocument": {"Suffix": "index.html"},
            "ErrorDocument": {"Key": "404.html"},
            "RoutingRules": [{"Condition": {"KeyPrefixEquals": "old/"}, "Redirect": {"ReplaceKeyPrefixWith": "new/"}}],
        })
        for b, text in [("api.test", "hello-from-api"), ("closed.test", "not-for-you")]:
            s3.put_object(Bucket=b, Key="data.json", Body=text, ContentType="application/json")
            out = server.cli("bucket", "website", "--allow", b)
            assert out.returncode == 0, out.stderr
        s3.put_bucket_cors(Bucket="api.test", CORSConfiguration={"CORSRules": [
            {"AllowedOrigins": [f"http://site.test:{port}"], "AllowedMethods": ["GET"], "MaxAgeSeconds": 60},
        ]})
    check("three buckets served as websites, one with CORS rules (boto3 and the hangar CLI)", setup)

    def t_curl_index():
        status, headers, body = curl(port, "site.test", "/")
        assert status == 200 and headers.get("content-type") == "text/html", (status, headers)
        assert "the index page" in body
    check("curl: / serves the index document", t_curl_index)

    def t_curl_error():
        status, _, body = curl(port, "site.test", "/missing.html")
        assert status == 404 and "custom not found" in body, (status, body)
    check("curl: a missing key serves the error document with 404", t_curl_error)

    def t_curl_redirect():
        status, headers, _ = curl(port, "site.test", "/old/page.html")
        assert status == 301 and headers.get("location") == f"http://site.test:{port}/new/page.html", (status, headers)
    check("curl: the routing rule redirects old/ to new/", t_curl_redirect)

    def t_curl_preflight():
        args = ["-X", "OPTIONS", "-H", f"Origin: http://site.test:{port}", "-H", "Access-Control-Request-Method: GET"]
        status, headers, _ = curl(port, "api.test", "/data.json", *args)
        assert status == 200 and headers.get("access-control-allow-origin") == f"http://site.test:{port}", headers
        status, _, _ = curl(port, "closed.test", "/data.json", *args)
        assert status == 403, status
    check("curl: CORS preflights are answered from the rules", t_curl_preflight)

    def t_anonymous_s3():
        status = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--noproxy", "*",
                                 f"{server.endpoint}/site.test/index.html"], capture_output=True, text=True).stdout
        assert status == "403", status
    check("curl: the S3 port still refuses anonymous reads", t_anonymous_s3)

    def t_browser_cors():
        dom = chromium_dom(chromium, f"http://site.test:{port}/", profile)
        assert "the index page" in dom, dom[-2000:]
        assert "api=hello-from-api;closed=blocked" in dom, dom[-2000:]
    check("chromium: the page loads, its cross-origin fetch is allowed by CORS, the other blocked", t_browser_cors)

    def t_browser_redirect():
        dom = chromium_dom(chromium, f"http://site.test:{port}/old/page.html", profile)
        assert "the new page" in dom, dom[-2000:]
    check("chromium: follows the routing rule's redirect", t_browser_redirect)

    def t_browser_error():
        dom = chromium_dom(chromium, f"http://site.test:{port}/nowhere", profile)
        assert "custom not found" in dom, dom[-2000:]
    check("chromium: shows the error document", t_browser_error)

    return check.finish(server)


if __name__ == "__main__":
    sys.exit(main())
