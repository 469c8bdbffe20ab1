//! A multi-process Hangar cluster on loopback, for tests of what happens between processes:
//! one `hangar control-plane`, `n` `hangar data-node`s (zones a, b, c, ...) and `m`
//! `hangar s3-frontend`s, each with its own TOML config, data dir and log under one temp
//! dir, as `scripts/local-cluster.sh` starts them.
//!
//! [`Cluster::start`] applies a layout (replication factor 3) and creates a key that may
//! create buckets ([`Cluster::key`]); tests then kill (SIGKILL), stop (SIGTERM) and restart
//! single processes. A restarted process gets the same config, data dir and ports.
//!
//! Dropping the cluster kills every process it started, by PID; if the test is failing it
//! first prints the tail of every process's log (each log keeps all starts of its process).
//!
//! Cluster tests are heavy (six or more debug-build processes each), so one runs at a time
//! on a machine: [`Cluster::start`] takes a lock that the cluster holds until it is dropped.
//! On Linux the lock is an abstract unix socket, which serialises the tests of one test
//! binary (`cargo test` threads) and of separate processes (`cargo nextest`) alike and goes
//! away with the process that held it.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Credentials, StalledStreamProtectionConfig};
use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use tempfile::TempDir;

use crate::{KeyInfo, block_files_in, free_addr_list, hangar_bin, log_tail, s3_config, wait_until};
use crate::{cli_stdout, run_cli};

/// The replication factor of every test cluster.
pub const REPLICATION: u32 = 3;
/// The block size processes use (the default): objects are cut into blocks of this many bytes.
pub const BLOCK_SIZE: usize = 1 << 20;
/// Objects up to this many bytes live inline in their metadata entry (no block files).
pub const INLINE_MAX: usize = hangar_common::config::INLINE_THRESHOLD;
/// The region the frontends serve.
pub const REGION: &str = "us-east-1";

/// How long a process may take from spawn to accepting connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERM'd process may take to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a freshly started frontend may take to serve S3 (it first needs the layout).
const SERVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a data node may take to be known to the control plane (its first heartbeat).
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Starts that fail (another test took a port between picking and binding) are retried.
const START_ATTEMPTS: usize = 4;
/// Lines of each process log shown when a test fails.
const TAIL_LINES: usize = 80;

/// A cluster whose processes find each other through a discovery backend.
#[derive(Clone, Debug, Default)]
pub struct Discovery {
    /// TOML sections appended to every process's config (`[kubernetes_discovery]`,
    /// `[consul_discovery]`, `[layout]`): no `bootstrap_peers` is written.
    pub sections: String,
    /// Environment of every process (`KUBECONFIG`, ...). Each also gets `POD_NAME` (its
    /// name), `POD_UID` and, for a data node, `HANGAR_ZONE`.
    pub env: Vec<(String, String)>,
    /// The first layout comes from `[layout] auto_assign`, not from the harness.
    pub auto_layout: bool,
}

/// What a process runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    ControlPlane,
    DataNode,
    Frontend,
}

impl Role {
    fn subcommand(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::DataNode => "data-node",
            Role::Frontend => "s3-frontend",
        }
    }
}

/// One process of the cluster: its config, ports, directories and (while it runs) child.
pub struct Proc {
    /// `control-plane`, `data1`, `s3-2`, ...: names its config, log and directory.
    pub name: String,
    pub role: Role,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    /// The process's own directory: `metadata_dir` of the control plane; `meta/` and
    /// `blocks/` of a data node; empty for a frontend (it keeps no state).
    pub dir: PathBuf,
    /// gRPC address (control plane, data node) or S3 address (frontend).
    pub addr: SocketAddr,
    /// `/health` and `/metrics`.
    pub admin_addr: SocketAddr,
    /// The zone of a data node.
    pub zone: String,
    /// Top-level TOML lines added to the process's config (shortened delays, ...).
    pub extra: String,
    /// Lines added to the process's `[admin]` section (trace export, metrics token, ...).
    pub admin_extra: String,
    /// How the process finds the cluster when not through `bootstrap_peers`.
    pub discovery: Option<Discovery>,
    child: Option<Child>,
    starts: usize,
}

impl Proc {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process was started and has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The tail of this process's log (all its starts), for failure messages.
    pub fn log(&self) -> String {
        format!("--- {} log {} ---\n{}", self.name, self.log_path.display(), log_tail(&self.log_path, TAIL_LINES))
    }

    fn write_config(&self, secret: &str, admin_token: &str, control_plane: SocketAddr) {
        let mut toml = format!("{}\nrpc_secret = {}\n", self.extra, toml_str(secret));
        match self.role {
            Role::ControlPlane => {
                toml += &format!("metadata_dir = {}\n", toml_path(&self.dir));
                toml += &format!("rpc_bind_addr = \"{}\"\n", self.addr);
                toml += &format!("replication_factor = {REPLICATION}\n");
                toml += &format!(
                    "[admin]\napi_bind_addr = \"{}\"\nadmin_token = {}\n{}\n",
                    self.admin_addr,
                    toml_str(admin_token),
                    self.admin_extra
                );
            }
            Role::DataNode => {
                toml += &format!("metadata_dir = {}\n", toml_path(&self.dir.join("meta")));
                toml += &format!("data_dir = {}\n", toml_path(&self.dir.join("blocks")));
                toml += &format!("rpc_bind_addr = \"{}\"\n", self.addr);
                if self.discovery.is_none() {
                    toml += &format!("bootstrap_peers = [\"{control_plane}\"]\n");
                }
                toml += &format!("[admin]\napi_bind_addr = \"{}\"\n{}\n", self.admin_addr, self.admin_extra);
            }
            Role::Frontend => {
                if self.discovery.is_none() {
                    toml += &format!("bootstrap_peers = [\"{control_plane}\"]\n");
                }
                toml += &format!("[s3_api]\napi_bind_addr = \"{}\"\ns3_region = \"{REGION}\"\n", self.addr);
                toml += &format!("[admin]\napi_bind_addr = \"{}\"\n{}\n", self.admin_addr, self.admin_extra);
            }
        }
        if let Some(d) = &self.discovery {
            toml += &format!("\n{}\n", d.sections);
        }
        std::fs::write(&self.config_path, toml).expect("write process config");
    }

    /// Spawns the process; its stdout and stderr go to its log (appended, so a restarted
    /// process's log shows every start).
    fn spawn(&mut self) {
        assert!(!self.is_running(), "{} is already running", self.name);
        self.starts += 1;
        let mut log = OpenOptions::new().create(true).append(true).open(&self.log_path).expect("open process log");
        writeln!(log, "===== test harness: start #{} of {} ({}) =====", self.starts, self.name, self.addr)
            .expect("log");
        let bin = hangar_bin();
        assert!(bin.exists(), "hangar binary not found at {} (build it or set HANGAR_BIN)", bin.display());
        let mut cmd = Command::new(&bin);
        cmd.arg(self.role.subcommand()).arg("--config").arg(&self.config_path);
        // A developer's shell may export HANGAR_* settings; they would override the config.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HANGAR_") || key == "RUST_LOG" {
                cmd.env_remove(key);
            }
        }
        if let Some(d) = &self.discovery {
            cmd.envs(d.env.iter().map(|(k, v)| (k, v)));
            cmd.env("POD_NAME", &self.name).env("POD_UID", format!("uid-{}-{}", self.name, self.starts));
            if self.role == Role::DataNode {
                cmd.env("HANGAR_ZONE", &self.zone);
            }
        }
        cmd.env("HANGAR_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log handle")))
            .stderr(Stdio::from(log));
        self.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("spawn {} for {}: {e}", bin.display(), self.name)));
    }

    /// Waits until the process accepts connections on its main port (a data node also has
    /// written its node id). `Err` says why not, with the log tail.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!("{} exited during startup ({status})\n{}", self.name, self.log()));
            }
            let id_written = self.role != Role::DataNode || node_id_file(&self.dir).exists();
            if id_written && tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not accept connections on {} within {READY_TIMEOUT:?}\n{}",
                    self.name,
                    self.addr,
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the process again on its config (same ports and directories) and waits until
    /// it accepts connections. Its port may be briefly unavailable (another process took it
    /// while it was down), so a start that fails is retried a few times.
    pub async fn restart(&mut self) {
        assert!(!self.is_running(), "{} is still running; kill or stop it first", self.name);
        let mut failure = String::new();
        for _ in 0..START_ATTEMPTS {
            self.spawn();
            match self.wait_ready().await {
                Ok(()) => return,
                Err(why) => {
                    self.kill9();
                    failure = why;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        panic!("{} did not restart in {START_ATTEMPTS} attempts: {failure}", self.name);
    }

    /// SIGKILL, by PID: no chance to flush or clean up. A no-op if it is not running.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, by PID; waits for the exit and returns its status.
    pub async fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap_or_else(|| panic!("{} is not running", self.name));
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} ({}) failed", self.name);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for process") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{}", self.name, self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    /// Never leaves a process behind, even when a start fails half-way.
    fn drop(&mut self) {
        self.kill9();
    }
}

fn node_id_file(data_node_dir: &Path) -> PathBuf {
    data_node_dir.join("meta").join("node_id")
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn toml_path(p: &Path) -> String {
    toml_str(p.to_str().expect("temp paths are UTF-8"))
}

fn random_hex(bytes: usize) -> String {
    hex::encode((0..bytes).map(|_| rand::random::<u8>()).collect::<Vec<u8>>())
}

/// A running cluster. See the module documentation.
pub struct Cluster {
    pub control_plane: Proc,
    pub data: Vec<Proc>,
    pub frontends: Vec<Proc>,
    /// The key made at start; it may create buckets.
    pub key: KeyInfo,
    pub rpc_secret: String,
    pub admin_token: String,
    pub discovery: Option<Discovery>,
    /// Top-level TOML lines every process's config gets.
    pub extra: String,
    /// Lines of the `[admin]` section every process's config gets.
    pub admin_extra: String,
    /// The temp dir holding every config, data dir and log (removed on drop).
    pub dir: PathBuf,
    // Dropped after the processes are killed (see Drop): first the files, then the lock.
    _temp: TempDir,
    _lock: ClusterLock,
}

impl Cluster {
    /// Starts a control plane, `n_data` data nodes in zones a, b, c, ... and `n_frontends`
    /// S3 frontends; assigns every data node a role (capacity 1T), applies layout version 1,
    /// creates [`Cluster::key`] with the create-bucket right, and waits until every frontend
    /// serves S3 requests.
    pub async fn start(n_data: usize, n_frontends: usize) -> Cluster {
        Self::start_with(n_data, n_frontends, "").await
    }

    /// [`Cluster::start`] with `extra` (top-level TOML lines) in every process's config.
    pub async fn start_with(n_data: usize, n_frontends: usize, extra: &str) -> Cluster {
        Self::start_opts(n_data, n_frontends, extra, "", None).await
    }

    /// [`Cluster::start`] with `admin` (lines of the `[admin]` section) in every process's config.
    pub async fn start_with_admin(n_data: usize, n_frontends: usize, admin: &str) -> Cluster {
        Self::start_opts(n_data, n_frontends, "", admin, None).await
    }

    /// [`Cluster::start`] with the processes finding each other through `discovery`.
    pub async fn start_discovered(n_data: usize, n_frontends: usize, discovery: Discovery) -> Cluster {
        Self::start_opts(n_data, n_frontends, "", "", Some(discovery)).await
    }

    async fn start_opts(
        n_data: usize,
        n_frontends: usize,
        extra: &str,
        admin_extra: &str,
        discovery: Option<Discovery>,
    ) -> Cluster {
        assert!(n_data >= REPLICATION as usize, "replication factor {REPLICATION} needs {REPLICATION} data nodes");
        let lock = ClusterLock::acquire().await;
        let temp = tempfile::Builder::new().prefix("hangar-cluster-").tempdir().expect("create temp dir");
        let dir = temp.path().to_path_buf();
        let addrs = free_addr_list(2);
        let control_plane = Proc {
            name: "control-plane".into(),
            role: Role::ControlPlane,
            config_path: dir.join("control-plane.toml"),
            log_path: dir.join("control-plane.log"),
            dir: dir.join("control-plane"),
            addr: addrs[0],
            admin_addr: addrs[1],
            zone: String::new(),
            extra: extra.to_string(),
            admin_extra: admin_extra.to_string(),
            discovery: discovery.clone(),
            child: None,
            starts: 0,
        };
        let mut cluster = Cluster {
            control_plane,
            data: Vec::new(),
            frontends: Vec::new(),
            key: KeyInfo { id: String::new(), secret: String::new(), name: String::new() },
            rpc_secret: random_hex(32),
            admin_token: random_hex(32),
            extra: extra.to_string(),
            admin_extra: admin_extra.to_string(),
            discovery: discovery.clone(),
            dir,
            _temp: temp,
            _lock: lock,
        };
        let cp = cluster.control_plane.addr;
        let (secret, token) = (cluster.rpc_secret.clone(), cluster.admin_token.clone());
        start_fresh(&mut cluster.control_plane, &secret, &token, cp, &[]).await;

        for _ in 0..n_data {
            cluster.add_data_node().await;
        }
        for _ in 0..n_frontends {
            cluster.add_frontend().await;
        }
        if discovery.as_ref().is_some_and(|d| d.auto_layout) {
            cluster
                .wait_for("automatic layout to apply version 1", JOIN_TIMEOUT, || async {
                    cluster.status().await.layout_version >= 1
                })
                .await;
        } else {
            for i in 0..n_data {
                cluster.assign_data_node(i).await;
            }
            cluster.cli_ok(["layout", "apply", "--version", "1"]).await;
        }

        // The control plane reaches the data nodes with the layout it just published.
        let deadline = Instant::now() + Duration::from_secs(20);
        cluster.key = loop {
            let out = cluster.cli(["key", "create", "cluster-tests"]).await;
            if out.status.success()
                && let Some(key) = KeyInfo::parse(&String::from_utf8_lossy(&out.stdout))
            {
                break key;
            }
            assert!(
                Instant::now() < deadline,
                "`hangar key create` kept failing after layout version 1 was applied:\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        cluster.cli_ok(["key", "allow", "--create-bucket", &cluster.key.id.clone()]).await;
        for i in 0..n_frontends {
            cluster.wait_frontend_serving(i).await;
        }
        cluster
    }

    /// Every port the cluster's processes use (running or not).
    fn used_addrs(&self) -> Vec<SocketAddr> {
        std::iter::once(&self.control_plane)
            .chain(&self.data)
            .chain(&self.frontends)
            .flat_map(|p| [p.addr, p.admin_addr])
            .collect()
    }

    fn new_proc(&self, role: Role, name: String, zone: String) -> Proc {
        Proc {
            config_path: self.dir.join(format!("{name}.toml")),
            log_path: self.dir.join(format!("{name}.log")),
            dir: if role == Role::Frontend { PathBuf::new() } else { self.dir.join(&name) },
            addr: "127.0.0.1:0".parse().expect("addr"),
            admin_addr: "127.0.0.1:0".parse().expect("addr"),
            name,
            role,
            zone,
            extra: self.extra.clone(),
            admin_extra: self.admin_extra.clone(),
            discovery: self.discovery.clone(),
            child: None,
            starts: 0,
        }
    }

    /// Starts one more data node (zone `a`, `b`, `c`, ... by its index) and waits until it
    /// accepts connections; returns its index. It has no role until [`Cluster::assign_data_node`].
    pub async fn add_data_node(&mut self) -> usize {
        let i = self.data.len();
        let zone = ((b'a' + (i % 26) as u8) as char).to_string();
        let mut p = self.new_proc(Role::DataNode, format!("data{}", i + 1), zone);
        let used = self.used_addrs();
        start_fresh(&mut p, &self.rpc_secret, &self.admin_token, self.control_plane.addr, &used).await;
        self.data.push(p);
        i
    }

    /// Starts one more frontend and waits until it accepts connections (not until it has a
    /// layout: see [`Cluster::wait_frontend_serving`]); returns its index.
    pub async fn add_frontend(&mut self) -> usize {
        let i = self.frontends.len();
        let mut p = self.new_proc(Role::Frontend, format!("s3-{}", i + 1), String::new());
        let used = self.used_addrs();
        start_fresh(&mut p, &self.rpc_secret, &self.admin_token, self.control_plane.addr, &used).await;
        self.frontends.push(p);
        i
    }

    /// `hangar layout assign <id> --zone <zone> --capacity 1T` for data node `i`, retried
    /// until the control plane has heard the node's first heartbeat.
    pub async fn assign_data_node(&self, i: usize) {
        let id = self.node_id(i);
        let zone = self.data[i].zone.clone();
        let mut last = None;
        let deadline = Instant::now() + JOIN_TIMEOUT;
        while Instant::now() < deadline {
            let out = self.cli(["layout", "assign", &id, "--zone", &zone, "--capacity", "1T"]).await;
            if out.status.success() {
                return;
            }
            last = Some(out);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let out = last.expect("at least one attempt");
        panic!(
            "`layout assign` of {} ({id}) kept failing for {JOIN_TIMEOUT:?}:\nstdout: {}\nstderr: {}",
            self.data[i].name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `hangar layout apply --version N`.
    pub async fn apply_layout(&self, version: u64) -> String {
        self.cli_ok(["layout", "apply", "--version", &version.to_string()]).await
    }

    /// `hangar layout remove <id>` for data node `i`.
    pub async fn remove_data_node(&self, i: usize) {
        self.cli_ok(["layout", "remove", &self.node_id(i)]).await;
    }

    /// Waits until the data has moved: a single live layout version, `version`, which every
    /// node of it has synced.
    pub async fn wait_layout_settled(&self, version: u64, timeout: Duration) {
        self.wait_for(&format!("layout version {version} to be the only live one"), timeout, || async {
            let s = self.status().await;
            s.layout_version == version && !s.raw.contains("Live layout versions")
        })
        .await;
    }

    // ---- clients ----------------------------------------------------------------

    /// The S3 endpoint of frontend `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://{}", self.frontends[i].addr)
    }

    /// SDK config for frontend `i` with the cluster key; short standard retries, bounded timeouts.
    pub fn s3_config(&self, i: usize) -> aws_sdk_s3::config::Builder {
        self.s3_config_as(i, &self.key)
    }

    /// [`Cluster::s3_config`] with another key.
    pub fn s3_config_as(&self, i: usize, key: &KeyInfo) -> aws_sdk_s3::config::Builder {
        self.s3_config_at(&self.endpoint(i), key)
    }

    /// [`Cluster::s3_config`] for any S3 endpoint, with `key`.
    fn s3_config_at(&self, endpoint: &str, key: &KeyInfo) -> aws_sdk_s3::config::Builder {
        let credentials = Credentials::new(&key.id, &key.secret, None, None, "hangar-cluster-tests");
        s3_config(endpoint, REGION, credentials)
            .retry_config(RetryConfig::standard().with_max_attempts(3).with_initial_backoff(Duration::from_millis(200)))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            )
            // A body that pauses while a process restarts is not a stalled client.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
    }

    /// Client of frontend `i` (the SDK's retries on: transient errors are retried briefly).
    pub fn s3_client(&self, i: usize) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(self.s3_config(i).build())
    }

    /// Client of frontend `i` that sends every request once: the test sees exactly what
    /// the frontend answered.
    pub fn s3_client_no_retry(&self, i: usize) -> aws_sdk_s3::Client {
        self.s3_client_no_retry_as(i, &self.key)
    }

    /// [`Cluster::s3_client_no_retry`] with another key.
    pub fn s3_client_no_retry_as(&self, i: usize, key: &KeyInfo) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(self.s3_config_as(i, key).retry_config(RetryConfig::disabled()).build())
    }

    /// Makes data node `i` serve S3 too: stops it, adds `[s3_api] api_bind_addr` to its
    /// config (kept for later restarts), starts it again and waits until it serves S3.
    /// Returns the S3 address and a client of it (the cluster key, no retries).
    pub async fn serve_s3_on_data_node(&mut self, i: usize) -> (SocketAddr, aws_sdk_s3::Client) {
        let used = self.used_addrs();
        // Not a port of a process that is down now and will take it back.
        let addr = std::iter::repeat_with(crate::free_addr).find(|a| !used.contains(a)).expect("a free port");
        self.data[i].stop().await;
        let mut config = OpenOptions::new().append(true).open(&self.data[i].config_path).expect("open config");
        writeln!(config, "[s3_api]\napi_bind_addr = \"{addr}\"\ns3_region = \"{REGION}\"").expect("write config");
        self.data[i].restart().await;
        let s3 = aws_sdk_s3::Client::from_conf(
            self.s3_config_at(&format!("http://{addr}"), &self.key).retry_config(RetryConfig::disabled()).build(),
        );
        let serving = wait_until(SERVE_TIMEOUT, || async { s3.list_buckets().send().await.is_ok() }).await;
        assert!(serving, "data node {i} did not serve S3 on {addr}\n{}", self.data[i].log());
        (addr, s3)
    }

    /// Every block file of every data node, by node index.
    pub fn all_block_files(&self) -> Vec<(usize, PathBuf)> {
        (0..self.data.len()).flat_map(|i| self.block_files(i).into_iter().map(move |f| (i, f))).collect()
    }

    /// `hangar --rpc-addr <control plane> <args>` with the admin token, ready to run.
    pub fn cli_command<I, S>(&self, args: I) -> tokio::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = tokio::process::Command::new(hangar_bin());
        cmd.arg("--rpc-addr").arg(self.control_plane.addr.to_string()).args(args);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HANGAR_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("HANGAR_ADMIN_TOKEN", &self.admin_token).stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// Runs the admin CLI against the control plane; its output, whatever the exit status.
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

    /// `hangar status`, parsed.
    pub async fn status(&self) -> ClusterStatus {
        let out = self.cli_ok(["status"]).await;
        ClusterStatus::parse(&out).unwrap_or_else(|| panic!("cannot parse `hangar status` output:\n{out}"))
    }

    // ---- data nodes -------------------------------------------------------------

    /// Data node `i`'s id (`<metadata_dir>/node_id`, written at its first start).
    pub fn node_id(&self, i: usize) -> String {
        let path = node_id_file(&self.data[i].dir);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())).trim().to_string()
    }

    /// Data node `i`'s `metadata_dir`.
    pub fn metadata_dir(&self, i: usize) -> PathBuf {
        self.data[i].dir.join("meta")
    }

    /// Data node `i`'s `data_dir`: block files are `<data_dir>/xx/yy/<64 hex>`.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.data[i].dir.join("blocks")
    }

    /// Data node `i`'s block files, sorted.
    pub fn block_files(&self, i: usize) -> Vec<PathBuf> {
        block_files_in(&self.data[i].dir)
    }

    /// The names (64 hex) of data node `i`'s block files.
    pub fn block_names(&self, i: usize) -> BTreeSet<String> {
        self.block_files(i).iter().filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string)).collect()
    }

    /// SIGKILL data node `i`.
    pub fn kill9_data(&mut self, i: usize) {
        self.data[i].kill9();
    }

    /// SIGTERM data node `i`; asserts it exits cleanly.
    pub async fn stop_data(&mut self, i: usize) {
        let status = self.data[i].stop().await;
        assert!(status.success(), "{} exited with {status} after SIGTERM\n{}", self.data[i].name, self.data[i].log());
    }

    /// Starts data node `i` again with the same config and directories; waits until it
    /// accepts connections.
    pub async fn restart_data(&mut self, i: usize) {
        self.data[i].restart().await;
    }

    // ---- control plane ----------------------------------------------------------

    pub fn kill9_control_plane(&mut self) {
        self.control_plane.kill9();
    }

    pub async fn stop_control_plane(&mut self) {
        let status = self.control_plane.stop().await;
        assert!(status.success(), "control plane exited with {status} after SIGTERM\n{}", self.control_plane.log());
    }

    /// Starts the control plane again (same config, metadata dir and address); waits until
    /// it answers the admin CLI.
    pub async fn restart_control_plane(&mut self) {
        self.control_plane.restart().await;
        let ok = wait_until(READY_TIMEOUT, || async { self.cli(["status"]).await.status.success() }).await;
        assert!(ok, "the restarted control plane does not answer `hangar status`\n{}", self.control_plane.log());
    }

    // ---- frontends --------------------------------------------------------------

    pub fn kill9_frontend(&mut self, i: usize) {
        self.frontends[i].kill9();
    }

    pub async fn stop_frontend(&mut self, i: usize) {
        let status = self.frontends[i].stop().await;
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM\n{}",
            self.frontends[i].name,
            self.frontends[i].log()
        );
    }

    /// Starts frontend `i` again (same config and address) and waits until it serves S3
    /// (it keeps no layout across restarts, so this needs the control plane).
    pub async fn restart_frontend(&mut self, i: usize) {
        self.frontends[i].restart().await;
        self.wait_frontend_serving(i).await;
    }

    /// Waits until frontend `i` answers ListBuckets with the cluster key (it has a layout
    /// and reaches a quorum of data nodes).
    pub async fn wait_frontend_serving(&self, i: usize) {
        let s3 = self.s3_client_no_retry(i);
        let ok = wait_until(SERVE_TIMEOUT, || async { s3.list_buckets().send().await.is_ok() }).await;
        if !ok {
            let err = s3.list_buckets().send().await.err();
            panic!(
                "{} does not serve S3 after {SERVE_TIMEOUT:?}: {err:?}\n{}",
                self.frontends[i].name,
                self.frontends[i].log()
            );
        }
    }

    // ---- all processes -----------------------------------------------------------

    fn procs_mut(&mut self) -> impl Iterator<Item = &mut Proc> {
        std::iter::once(&mut self.control_plane).chain(self.data.iter_mut()).chain(self.frontends.iter_mut())
    }

    /// The log tails of every process, for failure messages.
    pub fn logs(&self) -> String {
        std::iter::once(&self.control_plane)
            .chain(&self.data)
            .chain(&self.frontends)
            .map(Proc::log)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls `check` (every 250 ms) until it is true; panics naming `what` after `timeout`.
    pub async fn wait_for<F, Fut>(&self, what: &str, timeout: Duration, check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        wait_for(what, timeout, check).await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for p in self.procs_mut() {
            p.kill9();
        }
        // Shown by the test harness only for a failing test.
        if panicking {
            eprintln!("===== cluster logs (dir {}) =====\n{}", self.dir.display(), self.logs());
        }
    }
}

/// Polls `check` (every 250 ms) until it is true; panics naming `what` after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    assert!(wait_until(timeout, check).await, "timed out after {timeout:?} waiting for {what}");
}

/// Writes `p`'s config on fresh ports and starts it; a start that fails (most likely a
/// port another test took in between) is retried on other ports.
async fn start_fresh(p: &mut Proc, secret: &str, token: &str, control_plane: SocketAddr, used: &[SocketAddr]) {
    let mut failure = String::new();
    for attempt in 0..START_ATTEMPTS {
        // The control plane's address is chosen by the caller (the others' configs name it);
        // on a retry it moves too, which is fine because it starts first.
        if p.role != Role::ControlPlane || attempt > 0 {
            let addrs = loop {
                let a = free_addr_list(2);
                if !a.iter().any(|x| used.contains(x)) {
                    break a;
                }
            };
            p.addr = addrs[0];
            p.admin_addr = addrs[1];
        }
        let cp = if p.role == Role::ControlPlane { p.addr } else { control_plane };
        p.write_config(secret, token, cp);
        p.spawn();
        match p.wait_ready().await {
            Ok(()) => return,
            Err(why) => {
                p.kill9();
                failure = why;
            }
        }
    }
    panic!("{} did not start in {START_ATTEMPTS} attempts: {failure}", p.name);
}

// ---- `hangar status` ----------------------------------------------------------------

/// `hangar status`, parsed.
#[derive(Clone, Debug)]
pub struct ClusterStatus {
    pub layout_version: u64,
    pub nodes: Vec<NodeStatus>,
    pub raw: String,
}

#[derive(Clone, Debug)]
pub struct NodeStatus {
    pub id: String,
    /// Partitions held (0 for nodes that hold none, and for non-data nodes).
    pub partitions: u32,
    pub healthy: bool,
    /// `control`, `data` or `s3`.
    pub role: String,
    /// `healthy`, `failed`, `gone` or `not heard`.
    pub health: String,
    pub zone: String,
    /// `heartbeat`, the discovery backend, or `gone`.
    pub found_by: String,
}

impl ClusterStatus {
    /// Parses the table under the `ID  ROLE ...` header: columns are separated by at least
    /// two spaces, cells never hold two in a row.
    pub fn parse(out: &str) -> Option<ClusterStatus> {
        let mut lines = out.lines();
        let version = lines.next()?.strip_prefix("Layout version:")?.split_whitespace().next()?.parse().ok()?;
        let cells = |l: &str| -> Vec<String> {
            l.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_string).collect()
        };
        let mut lines = lines.skip_while(|l| !l.starts_with("ID "));
        let header = cells(lines.next()?);
        let col = |name: &str| header.iter().position(|h| h == name);
        let (id, role, partitions, health) = (col("ID")?, col("ROLE")?, col("PARTITIONS")?, col("HEALTH")?);
        let (zone, found_by) = (col("ZONE")?, col("FOUND BY")?);
        let mut nodes = Vec::new();
        for line in lines.take_while(|l| !l.starts_with('(')) {
            let c = cells(line);
            if c.len() != header.len() {
                return None;
            }
            nodes.push(NodeStatus {
                id: c[id].clone(),
                partitions: c[partitions].parse().unwrap_or(0),
                healthy: c[health] == "healthy",
                role: c[role].clone(),
                health: c[health].clone(),
                zone: c[zone].clone(),
                found_by: c[found_by].clone(),
            });
        }
        Some(ClusterStatus { layout_version: version, nodes, raw: out.to_string() })
    }

    pub fn node(&self, id: &str) -> Option<&NodeStatus> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

// ---- blocks ----------------------------------------------------------------------

/// The block file names (blake2b-256 hex) that storing `data` as one part creates, with
/// the cluster's block size; none for an inline object.
pub fn expected_block_names(data: &[u8]) -> BTreeSet<String> {
    if data.len() <= INLINE_MAX {
        return BTreeSet::new();
    }
    data.chunks(BLOCK_SIZE).map(|c| hex::encode(Blake2b::<U32>::digest(c))).collect()
}

// ---- one cluster at a time ---------------------------------------------------------

/// Held while a cluster runs; see the module documentation.
struct ClusterLock {
    #[cfg(target_os = "linux")]
    _socket: std::os::unix::net::UnixListener,
    #[cfg(not(target_os = "linux"))]
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl ClusterLock {
    const WAIT_AT_MOST: Duration = Duration::from_secs(900);

    #[cfg(target_os = "linux")]
    async fn acquire() -> ClusterLock {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixListener};
        let addr =
            SocketAddr::from_abstract_name(b"hangar-integration-tests-cluster-lock").expect("abstract socket name");
        let deadline = Instant::now() + Self::WAIT_AT_MOST;
        loop {
            match UnixListener::bind_addr(&addr) {
                Ok(socket) => return ClusterLock { _socket: socket },
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("cannot take the cluster test lock: {e}"),
            }
        }
    }

    /// Elsewhere only the tests of one process are serialised.
    #[cfg(not(target_os = "linux"))]
    async fn acquire() -> ClusterLock {
        static LOCK: std::sync::OnceLock<std::sync::Arc<tokio::sync::Mutex<()>>> = std::sync::OnceLock::new();
        let lock = LOCK.get_or_init(Default::default).clone();
        ClusterLock { _guard: lock.lock_owned().await }
    }
}
