//! Test harness for Hangar: starts the real `hangar` binary on free loopback
//! ports and hands out clients (aws-sdk-s3, raw HTTP, admin CLI) pointed at it.
//!
//! It runs `$HANGAR_BIN` when set (CI builds once and sets it); otherwise it first runs
//! `cargo build -p hangar` so that `cargo test --workspace` on a fresh clone tests the
//! current sources (a test build does not build other packages' binaries).

pub mod cluster;
pub mod fakes;
pub mod otlp;
pub mod peer;
pub mod sigv4;
pub mod util;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_s3::config::{Credentials, retry::RetryConfig};
use tempfile::TempDir;
use tokio::sync::mpsc;

pub use util::*;

/// How long a server may take from spawn to printing its `S3_ENDPOINT` line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGTERM'd server may take to exit.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Port races between parallel tests are possible (we bind :0 then drop), so a
/// server that dies before becoming ready is retried on fresh ports.
const START_ATTEMPTS: usize = 3;

/// Path of the `hangar` binary under test.
pub fn hangar_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HANGAR_BIN") {
        return PathBuf::from(p);
    }
    // CARGO_MANIFEST_DIR is integration-tests/; the workspace root is its parent.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("integration-tests has a parent directory");
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        // Cargo's own lock serialises parallel test processes; after the first, a no-op.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "hangar", "--bin", "hangar"])
            .current_dir(workspace)
            .status()
            .expect("run cargo build for the hangar binary");
        assert!(status.success(), "cargo build -p hangar failed");
    });
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace.join("target"));
    target.join("debug").join("hangar")
}

/// A free loopback port, found by binding port 0 and releasing it.
pub fn free_addr() -> SocketAddr {
    free_addrs::<1>()[0]
}

/// `N` distinct free loopback ports. All listeners are held until every port
/// is picked, so the kernel cannot hand out the same port twice.
pub fn free_addrs<const N: usize>() -> [SocketAddr; N] {
    let addrs = free_addr_list(N);
    std::array::from_fn(|i| addrs[i])
}

/// `n` distinct free loopback ports (see [`free_addrs`]), for when `n` is not a constant.
pub fn free_addr_list(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")).collect();
    listeners.iter().map(|l| l.local_addr().expect("local_addr")).collect()
}

/// How to start a server. Cloning it (it is cheap) keeps the temp data dir
/// alive, which is what lets a stopped server be restarted on the same dir.
#[derive(Clone, Default)]
pub struct ServerBuilder {
    env: BTreeMap<String, String>,
    data_dir: Option<PathBuf>,
    /// Owns the temp dir holding data (unless an explicit dir was given) and logs.
    scratch: Option<Arc<TempDir>>,
    starts: usize,
}

impl ServerBuilder {
    /// Sets an environment variable for the server process.
    pub fn env(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.env.insert(key.into(), value.to_string());
        self
    }

    pub fn block_size(self, bytes: usize) -> Self {
        self.env("HANGAR_BLOCK_SIZE", bytes)
    }

    pub fn gc_delay_secs(self, secs: u64) -> Self {
        self.env("HANGAR_BLOCK_GC_DELAY_SECS", secs)
    }

    pub fn root_credentials(self, access_key: &str, secret_key: &str) -> Self {
        self.env("HANGAR_ROOT_ACCESS_KEY_ID", access_key).env("HANGAR_ROOT_SECRET_ACCESS_KEY", secret_key)
    }

    /// Uses an existing data directory instead of a fresh temp dir.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    pub async fn start(mut self) -> Server {
        let scratch = self
            .scratch
            .get_or_insert_with(|| {
                Arc::new(tempfile::Builder::new().prefix("hangar-it-").tempdir().expect("create temp dir"))
            })
            .clone();
        let data_dir = self.data_dir.get_or_insert_with(|| scratch.path().join("data")).clone();
        std::fs::create_dir_all(&data_dir).expect("create data dir");

        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            self.starts += 1;
            let log_path = scratch.path().join(format!("server-{}.log", self.starts));
            match try_start(&self, &data_dir, &log_path).await {
                Ok(server) => return server,
                Err(why) => last_failure = why,
            }
        }
        panic!("hangar server did not start after {START_ATTEMPTS} attempts: {last_failure}");
    }

    /// Starts the server and creates a bucket named [`bucket_name`]`(prefix)`
    /// with a root client: (server, root client, bucket).
    pub async fn start_with_bucket(self, prefix: &str) -> (Server, aws_sdk_s3::Client, String) {
        let server = self.start().await;
        let s3 = server.s3_client();
        let bucket = new_bucket(&s3, prefix).await;
        (server, s3, bucket)
    }
}

/// One attempt at spawning the server; `Err` carries a description and log tail.
async fn try_start(builder: &ServerBuilder, data_dir: &Path, log_path: &Path) -> Result<Server, String> {
    let bin = hangar_bin();
    assert!(bin.exists(), "hangar binary not found at {} (build the workspace or set HANGAR_BIN)", bin.display());
    let [s3_addr, rpc_addr, admin_addr, web_addr] = free_addrs::<4>();
    let log = File::create(log_path).expect("create server log");

    let mut cmd = Command::new(&bin);
    cmd.arg("server")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--s3-addr")
        .arg(s3_addr.to_string())
        .arg("--rpc-addr")
        .arg(rpc_addr.to_string())
        .arg("--admin-addr")
        .arg(admin_addr.to_string())
        .arg("--web-addr")
        .arg(web_addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    // A developer's shell may export HANGAR_* settings; tests must not inherit them.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HANGAR_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(&builder.env);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));

    // Read stdout on a plain thread that keeps draining it for the child's whole
    // life, so the server can never block on a full pipe.
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // Receiver gone: keep draining so the child never blocks.
                continue;
            }
        }
    });

    let mut vars = BTreeMap::new();
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while !vars.contains_key("S3_ENDPOINT") {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, rx.recv()).await {
            Ok(Some(line)) => {
                let line = line.trim();
                if let Some((k, v)) = line.strip_prefix("export ").unwrap_or(line).split_once('=') {
                    vars.insert(k.to_string(), v.to_string());
                }
            }
            // Stdout closed: the server exited (likely lost a port race). Retryable.
            Ok(None) => {
                let status = child.wait().ok();
                return Err(format!(
                    "server exited before printing S3_ENDPOINT (status {status:?}); stdout vars {vars:?}\n--- log ---\n{}",
                    log_tail(log_path, 60)
                ));
            }
            // A hung server will not get better on other ports.
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server printed no S3_ENDPOINT within {STARTUP_TIMEOUT:?}; stdout vars {vars:?}\n--- log ---\n{}",
                    log_tail(log_path, 60)
                );
            }
        }
    }

    let get = |k: &str| vars.get(k).cloned().unwrap_or_else(|| panic!("server did not print {k}=...; got {vars:?}"));
    let endpoint = get("S3_ENDPOINT");
    assert_eq!(endpoint, format!("http://{s3_addr}"), "S3_ENDPOINT does not match --s3-addr");
    assert_eq!(get("WEB_ENDPOINT"), format!("http://{web_addr}"), "WEB_ENDPOINT does not match --web-addr");
    let server = Server {
        child,
        endpoint,
        access_key: get("AWS_ACCESS_KEY_ID"),
        secret_key: get("AWS_SECRET_ACCESS_KEY"),
        region: get("AWS_DEFAULT_REGION"),
        s3_addr,
        rpc_addr,
        admin_addr,
        web_addr,
        data_dir: data_dir.to_path_buf(),
        log_path: log_path.to_path_buf(),
        builder: builder.clone(),
    };

    // The lines are printed after binding, but confirm the port really accepts.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if tokio::net::TcpStream::connect(s3_addr).await.is_ok() {
            return Ok(server);
        }
        if Instant::now() > deadline {
            panic!("S3 port {s3_addr} never accepted a connection\n{}", server.log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running `hangar server` child process.
pub struct Server {
    child: Child,
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    pub s3_addr: SocketAddr,
    pub rpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The static website endpoint (`--web-addr`).
    pub web_addr: SocketAddr,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    builder: ServerBuilder,
}

/// A server that has exited; its data dir is kept so it can be started again.
pub struct Stopped {
    builder: ServerBuilder,
    pub data_dir: PathBuf,
}

impl Stopped {
    /// Starts a new server process on the same data dir (fresh ports).
    pub async fn start(self) -> Server {
        self.builder.start().await
    }
}

impl Server {
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Starts a server with default settings in a fresh temp dir.
    pub async fn start() -> Server {
        Self::builder().start().await
    }

    /// [`ServerBuilder::start_with_bucket`] with default settings.
    pub async fn start_with_bucket(prefix: &str) -> (Server, aws_sdk_s3::Client, String) {
        Self::builder().start_with_bucket(prefix).await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where the server's stderr (its log) goes.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The server's stderr so far (its logs), for failure messages.
    pub fn log(&self) -> String {
        format!("--- server log {} ---\n{}", self.log_path.display(), log_tail(&self.log_path, 200))
    }

    // ---- S3 clients -------------------------------------------------------

    /// SDK config for this server with the given credentials. Retries are off so
    /// that tests see exactly what the server answered.
    pub fn s3_config_for(&self, access_key: &str, secret_key: &str) -> aws_sdk_s3::config::Builder {
        let credentials = Credentials::new(access_key, secret_key, None, None, "hangar-tests");
        s3_config(&self.endpoint, &self.region, credentials).retry_config(RetryConfig::disabled())
    }

    pub fn s3_config(&self) -> aws_sdk_s3::config::Builder {
        self.s3_config_for(&self.access_key, &self.secret_key)
    }

    /// Client authenticated as the root key.
    pub fn s3_client(&self) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(self.s3_config().build())
    }

    /// Client authenticated with arbitrary credentials.
    pub fn s3_client_for(&self, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(self.s3_config_for(access_key, secret_key).build())
    }

    /// Client authenticated as a key created through the admin CLI.
    pub fn s3_client_for_key(&self, key: &KeyInfo) -> aws_sdk_s3::Client {
        self.s3_client_for(&key.id, &key.secret)
    }

    /// Hand-rolled SigV4 signer with the root credentials (for requests the SDK
    /// will not produce: aws-chunked signed streaming, skewed dates, ...).
    pub fn signer(&self) -> sigv4::Signer {
        sigv4::Signer::new(&self.access_key, &self.secret_key, &self.region)
    }

    /// A request to the S3 port (Host `127.0.0.1:PORT`), not yet signed.
    pub fn raw_request(&self, method: &str, path: &str) -> sigv4::RawRequest {
        sigv4::RawRequest::new(method, &self.s3_addr.to_string(), path)
    }

    /// Signs `req` with the root credentials at the current time.
    pub fn sign_now(&self, req: &mut sigv4::RawRequest, payload_hash: &str) {
        self.signer().sign(req, payload_hash, SystemTime::now());
    }

    /// Signs `req` now (see [`Server::sign_now`]) and sends it (see [`Server::send_raw`]).
    pub async fn send_signed(&self, mut req: sigv4::RawRequest, payload_hash: &str) -> reqwest::Response {
        self.sign_now(&mut req, payload_hash);
        self.send_raw(&req).await
    }

    /// Plain-HTTP reqwest client.
    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("reqwest client")
    }

    /// Sends a raw (already signed) request to the S3 port. The request's
    /// `host` may be any name (e.g. `bucket.s3.test:PORT`): it is resolved to
    /// the server's loopback address, so the Host header is sent unchanged.
    pub async fn send_raw(&self, req: &sigv4::RawRequest) -> reqwest::Response {
        let host_only = req.host.rsplit_once(':').map_or(req.host.as_str(), |(h, _)| h);
        let client = reqwest::Client::builder()
            .resolve(host_only, self.s3_addr)
            .timeout(Duration::from_secs(60))
            .build()
            .expect("reqwest client");
        let method = reqwest::Method::from_bytes(req.method.as_bytes()).expect("method");
        let mut rb = client.request(method, req.url());
        for (k, v) in &req.headers {
            // reqwest derives Host and Content-Length itself (same values).
            if k.eq_ignore_ascii_case("host") || k.eq_ignore_ascii_case("content-length") {
                continue;
            }
            rb = rb.header(k.as_str(), v.as_str());
        }
        rb.body(req.body.clone()).send().await.expect("send raw request")
    }

    /// Sends a raw (already signed) request over a fresh connection with its body in
    /// `Transfer-Encoding: chunked` (one HTTP chunk per element of `chunks`) and no
    /// Content-Length, as clients that stream from a pipe do: (status, body).
    /// `target` is the request line's path and query.
    pub async fn send_chunked(
        &self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        chunks: &[&[u8]],
    ) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut head = format!("{method} {target} HTTP/1.1\r\n");
        for (k, v) in headers {
            if !k.eq_ignore_ascii_case("content-length") {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        head.push_str("transfer-encoding: chunked\r\nconnection: close\r\n\r\n");
        let mut conn = tokio::net::TcpStream::connect(self.s3_addr).await.expect("connect to the S3 port");
        conn.write_all(head.as_bytes()).await.expect("send head");
        let mut body = Vec::new();
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            body.extend_from_slice(chunk);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        // A server that answers before the body is in may close the connection: the answer
        // is what counts, so a failed send is only reported with it.
        let sent = conn.write_all(&body).await;
        let mut answer = Vec::new();
        let read = conn.read_to_end(&mut answer).await;
        if answer.is_empty() {
            panic!("no answer to a chunked {method} {target}: send {sent:?}, read {read:?}");
        }
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }

    /// GET on the admin HTTP port: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let resp = self.http().get(format!("http://{}{}", self.admin_addr, path)).send().await.expect("admin GET");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("admin body"))
    }

    // ---- admin CLI --------------------------------------------------------

    /// `hangar --rpc-addr .. --data-dir .. <args>`, ready to run; tests may add env.
    pub fn cli_command<I, S>(&self, args: I) -> tokio::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        cli_command_at(self.rpc_addr, &self.data_dir, args)
    }

    /// Runs the admin CLI and returns its output, whatever the exit status.
    pub async fn cli<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_cli(self.cli_command(args)).await
    }

    /// Runs the admin CLI, asserts success, returns stdout.
    pub async fn cli_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
        let out = self.cli(&args).await;
        cli_stdout(&args, out)
    }

    /// `key create NAME`, parsed.
    pub async fn create_key(&self, name: &str) -> KeyInfo {
        let out = self.cli_ok(["key", "create", name]).await;
        KeyInfo::parse(&out).unwrap_or_else(|| panic!("cannot parse `key create` output:\n{out}"))
    }

    // ---- on-disk inspection -----------------------------------------------

    /// All block files: `DIR/blocks/xx/yy/<64 hex>`.
    pub fn block_files(&self) -> Vec<PathBuf> {
        block_files_in(&self.data_dir)
    }

    // ---- lifecycle --------------------------------------------------------

    /// SIGTERM, then asserts a clean exit (status 0).
    pub async fn stop(mut self) -> Stopped {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for server") {
                break status;
            }
            if Instant::now() > deadline {
                panic!("server did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.success(), "server exited with {status} after SIGTERM\n{}", self.log());
        Stopped { builder: self.builder.clone(), data_dir: self.data_dir.clone() }
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(mut self) -> Stopped {
        let _ = self.child.kill();
        let _ = self.child.wait();
        Stopped { builder: self.builder.clone(), data_dir: self.data_dir.clone() }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Shown by the test harness only when the test failed.
        if std::thread::panicking() {
            eprintln!("{}", self.log());
        }
    }
}

/// `hangar --rpc-addr RPC_ADDR --data-dir DATA_DIR <args>`, ready to run, with
/// no inherited admin token (tests may set `HANGAR_ADMIN_TOKEN` themselves).
pub fn cli_command_at<I, S>(rpc_addr: SocketAddr, data_dir: &Path, args: I) -> tokio::process::Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = tokio::process::Command::new(hangar_bin());
    cmd.arg("--rpc-addr")
        .arg(rpc_addr.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("HANGAR_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Block files under a data dir, sorted.
pub fn block_files_in(data_dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&data_dir.join("blocks"), &mut out);
    out.sort();
    out
}

/// A key as printed by `hangar key create`.
#[derive(Clone, Debug)]
pub struct KeyInfo {
    pub id: String,
    pub secret: String,
    pub name: String,
}

impl KeyInfo {
    pub fn parse(out: &str) -> Option<KeyInfo> {
        let field = |label: &str| out.lines().find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_string()));
        Some(KeyInfo { id: field("Key ID:")?, secret: field("Secret key:")?, name: field("Name:")? })
    }
}

/// Runs an admin CLI command (60 s at most); its output, whatever the exit status.
pub async fn run_cli(mut cmd: tokio::process::Command) -> Output {
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("admin CLI timed out")
        .expect("run admin CLI")
}

/// Asserts that a CLI run succeeded; its stdout.
pub fn cli_stdout(args: &[std::ffi::OsString], out: Output) -> String {
    assert!(
        out.status.success(),
        "hangar {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("CLI stdout is UTF-8")
}
