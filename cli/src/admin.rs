//! Admin verbs: thin calls to the control plane's AdminService, and how their answers are
//! printed. Verbs and flags follow Garage's CLI where they do the same thing.

use std::net::SocketAddr;
use std::path::Path;

use clap::{Args, Subcommand};
use hangar_common::rpc::{AdminGrpc, admin_client, lazy_channel};
use hangar_proto::control::*;

pub type CliResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create a key with a generated id and secret, and print both.
    Create {
        /// A name for the key, unique among keys; commands accept it in place of the id.
        name: String,
    },
    /// Add a key whose id and secret were made elsewhere (for example by another S3 store).
    Import {
        /// The access key id: 3 to 128 letters or digits.
        id: String,
        /// The secret access key: 8 to 128 printable characters.
        secret: String,
        /// A name for the key (default: the id).
        #[arg(short, long)]
        name: Option<String>,
    },
    /// List keys: id and name.
    List,
    /// Show a key (by id or name): its settings and the buckets it may use.
    Info {
        /// The key's id or name.
        key: String,
        /// Print the secret access key as well.
        #[arg(long)]
        show_secret: bool,
    },
    /// Delete a key and its rights on every bucket (the root key cannot be deleted).
    Delete {
        /// The key's id or name.
        key: String,
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
    },
    /// Give a key a new name.
    Rename {
        /// The key's id or current name.
        key: String,
        /// The new name, unique among keys.
        new_name: String,
    },
    /// Give a key a new generated secret (its id and rights stay) and print it.
    Rotate {
        /// The key's id or name.
        key: String,
    },
    /// Grant a key rights beyond single buckets.
    Allow(KeyFlags),
    /// Take such rights from a key.
    Deny(KeyFlags),
}

#[derive(Args)]
pub struct KeyFlags {
    /// The right to create buckets through S3 (it becomes their owner).
    #[arg(long, required = true)]
    create_bucket: bool,
    /// The key's id or name.
    key: String,
}

#[derive(Subcommand)]
pub enum LayoutCommand {
    /// Stage a role for a data node: the zone it is in and the capacity it offers.
    Assign {
        /// The node's id, or a prefix of it that names one node (see `hangar status`).
        node: String,
        /// The node's zone (a rack, a room, a data centre): replicas go to distinct zones.
        #[arg(short, long)]
        zone: String,
        /// Capacity offered, in bytes or with a unit: 500G, 1T, 2TiB. Partitions are
        /// shared in proportion to it.
        #[arg(short, long, value_parser = parse_capacity)]
        capacity: u64,
        /// A free-form tag (repeat for several).
        #[arg(short, long = "tag")]
        tags: Vec<String>,
    },
    /// Stage the removal of a node from the layout (its data moves to the others).
    Remove {
        /// The node's id or a unique prefix of it.
        node: String,
    },
    /// Stage layout-wide settings.
    Config {
        /// How many copies of every object the cluster keeps (1 to 7).
        #[arg(short = 'r', long)]
        replication_factor: u32,
    },
    /// The current layout, the staged changes and what applying them would do.
    Show,
    /// Apply the staged changes as the next layout version.
    Apply {
        /// The version to create: the current version + 1 (as `layout show` prints it),
        /// so a change reviewed against an older layout is never applied to a newer one.
        #[arg(long)]
        version: u64,
    },
    /// Drop the staged changes.
    Revert {
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
    /// Every layout version applied, and which are still live.
    History,
}

/// Parses `1T`, `500G`, `2TiB`, `1000000` (decimal units, binary with `i`).
pub fn parse_capacity(s: &str) -> Result<u64, String> {
    hangar_common::config::parse_size(s)
}

/// A quota: a size or a count, or `none` for no limit (0).
fn parse_limit(s: &str, parse: impl Fn(&str) -> Result<u64, String>) -> Result<u64, String> {
    if s.eq_ignore_ascii_case("none") { Ok(0) } else { parse(s) }
}

fn parse_size_limit(s: &str) -> Result<u64, String> {
    parse_limit(s, parse_capacity)
}

fn parse_count_limit(s: &str) -> Result<u64, String> {
    parse_limit(s, |s| s.parse::<u64>().map_err(|_| format!("`{s}` is not a number of objects")))
}

/// `--older-than`: a duration like 1d, 12h, 30m, 2w.
fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration like 1d, 12h or 30m: {e}"))
}

#[derive(Subcommand)]
pub enum BucketCommand {
    /// Create a bucket (no key may use it until `bucket allow`; the root key may).
    Create {
        /// The bucket name (S3 rules: 3 to 63 lowercase letters, digits, dots, hyphens).
        name: String,
    },
    /// List buckets: name, id, creation date.
    List,
    /// Show a bucket: names, usage, quotas and the keys that may use it.
    Info {
        /// The bucket's name or id.
        bucket: String,
    },
    /// Delete an empty bucket.
    Delete {
        /// The bucket's name or id.
        bucket: String,
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
    },
    /// Grant a key rights on a bucket.
    Allow(BucketFlags),
    /// Take rights on a bucket from a key.
    Deny(BucketFlags),
    /// Give a bucket one more name (S3 clients see each name as a bucket).
    Alias {
        /// The bucket's name or id.
        bucket: String,
        /// The new name.
        alias: String,
    },
    /// Take a name from a bucket (a bucket keeps at least one).
    Unalias {
        /// The bucket's name or id.
        bucket: String,
        /// The name to remove.
        alias: String,
    },
    /// Set or remove a bucket's quotas; writes past them are refused (403 QuotaExceeded).
    SetQuotas {
        /// The bucket's name or id.
        bucket: String,
        /// Most bytes the bucket may hold (500M, 10G, ...), or `none`.
        #[arg(long, value_parser = parse_size_limit)]
        max_size: Option<u64>,
        /// Most objects the bucket may hold, or `none`.
        #[arg(long, value_parser = parse_count_limit)]
        max_objects: Option<u64>,
    },
    /// Serve a bucket on the website endpoint (`[s3_web]`, port 3902), anonymously, or stop.
    Website {
        /// The bucket's name or id.
        bucket: String,
        /// Serve the bucket.
        #[arg(long, conflicts_with = "deny", required_unless_present = "deny")]
        allow: bool,
        /// Stop serving it.
        #[arg(long)]
        deny: bool,
        /// Appended to paths ending in `/` [default: the frontends' `[s3_web] index`, index.html].
        #[arg(long, requires = "allow")]
        index_document: Option<String>,
        /// Served with status 404 for keys that do not exist.
        #[arg(long, requires = "allow")]
        error_document: Option<String>,
    },
    /// Abort multipart uploads that were started long ago and never finished.
    CleanupIncompleteUploads {
        /// Abort uploads started more than this long ago: 1d, 12h, 30m, 2w.
        #[arg(long, value_parser = parse_age)]
        older_than: std::time::Duration,
        /// The buckets' names or ids.
        #[arg(required = true)]
        buckets: Vec<String>,
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args)]
pub struct BucketFlags {
    /// Read objects and list them.
    #[arg(long)]
    read: bool,
    /// Write and delete objects.
    #[arg(long)]
    write: bool,
    /// Change the bucket's settings and delete it.
    #[arg(long)]
    owner: bool,
    /// The bucket's name or id.
    bucket: String,
    /// The key's id or name.
    #[arg(long)]
    key: String,
}

/// Where the admin API is and the token it wants.
pub struct Target {
    pub addr: SocketAddr,
    pub token: String,
}

/// Reaches the admin API.
pub fn connect(t: &Target) -> Result<Admin, Box<dyn std::error::Error>> {
    Ok(Admin { grpc: admin_client(lazy_channel(&t.addr.to_string())?, &t.token)?, addr: t.addr })
}

/// The admin token from the environment: HANGAR_ADMIN_TOKEN, or the file
/// HANGAR_ADMIN_TOKEN_FILE names.
pub fn token_from_env() -> Result<Option<String>, Box<dyn std::error::Error>> {
    if let Ok(t) = std::env::var("HANGAR_ADMIN_TOKEN")
        && !t.is_empty()
    {
        return Ok(Some(t));
    }
    match std::env::var_os("HANGAR_ADMIN_TOKEN_FILE") {
        Some(p) if !p.is_empty() => {
            let t = std::fs::read_to_string(&p)
                .map_err(|e| format!("HANGAR_ADMIN_TOKEN_FILE: cannot read {}: {e}", Path::new(&p).display()))?;
            Ok(Some(t.trim().to_string()))
        }
        _ => Ok(None),
    }
}

/// The admin token a server keeps in its data directory.
pub fn token_from(data_dir: &Path) -> Result<String, Box<dyn std::error::Error>> {
    token_in(&data_dir.join("meta").join("admin_token"))
}

/// The admin token in a file a control plane generated.
pub fn token_in(path: &Path) -> Result<String, Box<dyn std::error::Error>> {
    Ok(std::fs::read_to_string(path)
        .map_err(|e| {
            format!(
                "no admin token: set HANGAR_ADMIN_TOKEN (or HANGAR_ADMIN_TOKEN_FILE), give the server's config \
                 with -c FILE, or point --data-dir at the server's directory ({}: {e})",
                path.display()
            )
        })?
        .trim()
        .to_string())
}

/// An admin API client that knows its address, for error messages.
pub struct Admin {
    grpc: AdminGrpc,
    addr: SocketAddr,
}

impl Admin {
    pub(crate) fn client(&self) -> AdminGrpc {
        self.grpc.clone()
    }

    pub(crate) fn err(&self, s: tonic::Status) -> Box<dyn std::error::Error> {
        match s.code() {
            tonic::Code::Unavailable => format!(
                "cannot reach the control plane at {}: {} (is it running? give its address with --rpc-addr, \
                 HANGAR_RPC_ADDR or -c CONFIG)",
                self.addr,
                s.message()
            )
            .into(),
            tonic::Code::Unauthenticated => format!(
                "the control plane at {} refused the admin token ({}); use the server's token (HANGAR_ADMIN_TOKEN, \
                 -c CONFIG or --data-dir)",
                self.addr,
                s.message()
            )
            .into(),
            _ => s.message().to_string().into(),
        }
    }
}

pub(crate) fn ms_to_date(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let rem = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn rights(r: bool, w: bool, o: bool) -> String {
    format!("{}{}{}", if r { "R" } else { "-" }, if w { "W" } else { "-" }, if o { "O" } else { "-" })
}

/// Bytes in decimal units, as capacities are given.
fn human(bytes: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", units[u]) }
}

fn limit(v: u64, f: impl Fn(u64) -> String) -> String {
    if v == 0 { "none".into() } else { f(v) }
}

/// Prints rows under headers, each column as wide as its widest cell.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let n = cells.len();
        let out: Vec<String> = cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| if i + 1 == n { c } else { format!("{c:<w$}", w = widths[i]) })
            .collect();
        println!("{}", out.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn print_key(k: &KeyInfo, secret: bool) {
    println!("Key ID: {}", k.access_key_id);
    if secret && !k.secret_access_key.is_empty() {
        println!("Secret key: {}", k.secret_access_key);
    }
    println!("Name: {}", k.name);
    println!("Created: {}", ms_to_date(k.created_ms));
    if k.root {
        println!("Root key: every right on every bucket");
    }
    println!("Can create buckets: {}", k.allow_create_bucket);
    if !k.buckets.is_empty() {
        println!("Buckets:");
        let rows: Vec<Vec<String>> = k
            .buckets
            .iter()
            .map(|b| vec![rights(b.read, b.write, b.owner), b.bucket_name.clone(), b.bucket_id.clone()])
            .collect();
        table(&["RIGHTS", "BUCKET", "ID"], &rows);
    }
}

fn print_bucket(b: &BucketInfo, usage: bool) {
    println!("Bucket: {}", b.name);
    println!("ID: {}", b.id);
    if !b.aliases.is_empty() {
        println!("Names: {}", b.aliases.join(", "));
    }
    println!("Created: {}", ms_to_date(b.created_ms));
    if usage {
        println!("Objects: {}", b.objects);
        println!("Size: {} ({} bytes)", human(b.bytes), b.bytes);
        println!("Multipart uploads in progress: {}", b.uploads);
    }
    println!("Quotas: max size {}, max objects {}", limit(b.max_size, human), limit(b.max_objects, |v| v.to_string()));
    if b.website {
        let index = if b.website_index.is_empty() { "the default" } else { b.website_index.as_str() };
        let error = if b.website_error.is_empty() { "none" } else { b.website_error.as_str() };
        println!("Website: served (index document {index}, error document {error})");
    } else {
        println!("Website: not served");
    }
    if !b.keys.is_empty() {
        println!("Keys:");
        let rows: Vec<Vec<String>> = b
            .keys
            .iter()
            .map(|k| vec![rights(k.read, k.write, k.owner), k.access_key_id.clone(), k.key_name.clone()])
            .collect();
        table(&["RIGHTS", "KEY ID", "NAME"], &rows);
    }
}

fn versions(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

pub(crate) fn role_name(role: i32) -> &'static str {
    match NodeRole::try_from(role) {
        Ok(NodeRole::Data) => "data",
        Ok(NodeRole::Frontend) => "s3",
        Ok(NodeRole::Control) => "control",
        _ => "?",
    }
}

pub async fn status(c: &Admin) -> CliResult {
    let s = c.client().status(StatusRequest {}).await.map_err(|e| c.err(e))?.into_inner();
    println!("Layout version: {}  (replication factor {})", s.layout_version, s.replication_factor);
    if s.live_versions.len() > 1 {
        println!(
            "Live layout versions: {} (data is moving; reads use version {})",
            versions(&s.live_versions),
            s.read_version
        );
    }
    let dash = || "-".to_string();
    let mut rows = Vec::new();
    if let Some(cp) = &s.control_plane {
        rows.push(vec![
            cp.id.clone(),
            "control".into(),
            cp.hostname.clone(),
            cp.rpc_addr.clone(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            "healthy".into(),
            dash(),
            "now".into(),
        ]);
    }
    let mut problems = Vec::new();
    for n in &s.nodes {
        let info = n.node.clone().unwrap_or_default();
        let data = info.role == NodeRole::Data as i32;
        let layout =
            if data && n.acked_version > 0 { format!("{}/{}", n.acked_version, n.synced_version) } else { dash() };
        rows.push(vec![
            info.id.clone(),
            role_name(info.role).into(),
            if info.hostname.is_empty() { dash() } else { info.hostname.clone() },
            info.rpc_addr.clone(),
            if n.zone.is_empty() { dash() } else { n.zone.clone() },
            if n.capacity == 0 { dash() } else { human(n.capacity) },
            if data { n.partitions.to_string() } else { dash() },
            if n.tags.is_empty() { dash() } else { n.tags.join(",") },
            layout,
            match (n.healthy, n.discovery.as_str(), n.last_seen_ms) {
                (true, _, _) => "healthy",
                (false, "gone", _) => "gone",
                (false, _, 0) => "not heard",
                (false, _, _) => "failed",
            }
            .into(),
            if n.discovery.is_empty() { dash() } else { n.discovery.clone() },
            if n.last_seen_ms > 0 { ms_to_date(n.last_seen_ms) } else { "never".into() },
        ]);
        if let Some(w) =
            n.workers.iter().find(|w| w.name == "sync" && !w.progress.is_empty() && s.live_versions.len() > 1)
        {
            problems.push(format!("{}: sync {}", info.id, w.progress));
        }
        for w in n.workers.iter().filter(|w| !w.last_error.is_empty() && w.state != "idle" && w.state != "busy") {
            problems.push(format!(
                "{}: worker {} is {}: {} errors, last: {}",
                info.id,
                w.name,
                w.state.to_uppercase(),
                w.errors,
                w.last_error
            ));
        }
    }
    table(
        &[
            "ID",
            "ROLE",
            "HOSTNAME",
            "ADDRESS",
            "ZONE",
            "CAPACITY",
            "PARTITIONS",
            "TAGS",
            "LAYOUT",
            "HEALTH",
            "FOUND BY",
            "LAST SEEN",
        ],
        &rows,
    );
    println!("(LAYOUT: the newest layout version a data node enforces / the newest whose data it holds in full)");
    println!("(FOUND BY: its heartbeats, or the discovery backend listing it; `gone`: no longer listed)");
    for p in problems {
        println!("{p}");
    }
    Ok(())
}

pub async fn key(c: &Admin, cmd: KeyCommand) -> CliResult {
    let mut g = c.client();
    match cmd {
        KeyCommand::Create { name } => {
            let req = CreateKeyRequest { name, ..Default::default() };
            print_key(&g.create_key(req).await.map_err(|e| c.err(e))?.into_inner(), true);
        }
        KeyCommand::Import { id, secret, name } => {
            let req = CreateKeyRequest {
                name: name.unwrap_or_else(|| id.clone()),
                access_key_id: id,
                secret_access_key: secret,
            };
            print_key(&g.create_key(req).await.map_err(|e| c.err(e))?.into_inner(), false);
        }
        KeyCommand::List => {
            let keys = g.list_keys(ListKeysRequest {}).await.map_err(|e| c.err(e))?.into_inner().keys;
            let rows: Vec<Vec<String>> =
                keys.iter().map(|k| vec![k.access_key_id.clone(), k.name.clone(), ms_to_date(k.created_ms)]).collect();
            table(&["ID", "NAME", "CREATED"], &rows);
        }
        KeyCommand::Info { key, show_secret } => {
            print_key(&g.get_key(KeyRef { key }).await.map_err(|e| c.err(e))?.into_inner(), show_secret)
        }
        KeyCommand::Delete { key, yes } => {
            if !yes {
                return Err(format!("`key delete {key}` deletes the key and its rights; add --yes to confirm").into());
            }
            g.delete_key(KeyRef { key: key.clone() }).await.map_err(|e| c.err(e))?;
            println!("Deleted key {key}");
        }
        KeyCommand::Rename { key, new_name } => {
            let req = RenameKeyRequest { key, new_name };
            print_key(&g.rename_key(req).await.map_err(|e| c.err(e))?.into_inner(), false);
        }
        KeyCommand::Rotate { key } => {
            print_key(&g.rotate_key_secret(KeyRef { key }).await.map_err(|e| c.err(e))?.into_inner(), true)
        }
        KeyCommand::Allow(f) | KeyCommand::Deny(f) if !f.create_bucket => {
            return Err(format!("name a right to change for key {} (--create-bucket)", f.key).into());
        }
        KeyCommand::Allow(f) => print_key(
            &g.set_key_create_bucket(SetKeyCreateBucketRequest { key: f.key, allow: true })
                .await
                .map_err(|e| c.err(e))?
                .into_inner(),
            false,
        ),
        KeyCommand::Deny(f) => print_key(
            &g.set_key_create_bucket(SetKeyCreateBucketRequest { key: f.key, allow: false })
                .await
                .map_err(|e| c.err(e))?
                .into_inner(),
            false,
        ),
    }
    Ok(())
}

pub async fn bucket(c: &Admin, cmd: BucketCommand) -> CliResult {
    let mut g = c.client();
    let grant = |f: BucketFlags, allow: bool| SetBucketPermissionRequest {
        bucket: f.bucket,
        key: f.key,
        allow,
        read: f.read,
        write: f.write,
        owner: f.owner,
    };
    match cmd {
        BucketCommand::Create { name } => print_bucket(
            &g.create_bucket(CreateBucketRequest { name }).await.map_err(|e| c.err(e))?.into_inner(),
            false,
        ),
        BucketCommand::List => {
            let buckets = g.list_buckets(ListBucketsRequest {}).await.map_err(|e| c.err(e))?.into_inner().buckets;
            let rows: Vec<Vec<String>> = buckets
                .iter()
                .map(|b| {
                    let names = if b.aliases.is_empty() { b.name.clone() } else { b.aliases.join(",") };
                    vec![names, b.id.clone(), ms_to_date(b.created_ms)]
                })
                .collect();
            table(&["NAME", "ID", "CREATED"], &rows);
        }
        BucketCommand::Info { bucket } => {
            print_bucket(&g.get_bucket(BucketRef { bucket }).await.map_err(|e| c.err(e))?.into_inner(), true)
        }
        BucketCommand::Delete { bucket, yes } => {
            if !yes {
                return Err(format!("`bucket delete {bucket}` deletes the bucket; add --yes to confirm").into());
            }
            g.delete_bucket(BucketRef { bucket: bucket.clone() }).await.map_err(|e| c.err(e))?;
            println!("Deleted bucket {bucket}");
        }
        BucketCommand::Allow(f) => {
            print_bucket(&g.set_bucket_permission(grant(f, true)).await.map_err(|e| c.err(e))?.into_inner(), false)
        }
        BucketCommand::Deny(f) => {
            print_bucket(&g.set_bucket_permission(grant(f, false)).await.map_err(|e| c.err(e))?.into_inner(), false)
        }
        BucketCommand::Alias { bucket, alias } => {
            let req = SetBucketAliasRequest { bucket, alias, add: true };
            print_bucket(&g.set_bucket_alias(req).await.map_err(|e| c.err(e))?.into_inner(), false)
        }
        BucketCommand::Unalias { bucket, alias } => {
            let req = SetBucketAliasRequest { bucket, alias, add: false };
            print_bucket(&g.set_bucket_alias(req).await.map_err(|e| c.err(e))?.into_inner(), false)
        }
        BucketCommand::SetQuotas { bucket, max_size, max_objects } => {
            if max_size.is_none() && max_objects.is_none() {
                return Err("name a quota to set: --max-size SIZE|none, --max-objects N|none".into());
            }
            // Quotas not named keep their value.
            let req = SetBucketQuotasRequest { bucket, max_size, max_objects };
            print_bucket(&g.set_bucket_quotas(req).await.map_err(|e| c.err(e))?.into_inner(), false)
        }
        BucketCommand::Website { bucket, allow, deny: _, index_document, error_document } => {
            let req = SetBucketWebsiteRequest {
                bucket,
                allow,
                index_document: index_document.unwrap_or_default(),
                error_document: error_document.unwrap_or_default(),
            };
            print_bucket(&g.set_bucket_website(req).await.map_err(|e| c.err(e))?.into_inner(), false)
        }
        BucketCommand::CleanupIncompleteUploads { older_than, buckets, yes } => {
            if !yes {
                return Err("`bucket cleanup-incomplete-uploads` aborts uploads for good; add --yes to confirm".into());
            }
            let before = hangar_common::ids::now_ms().saturating_sub(older_than.as_millis() as u64);
            for bucket in buckets {
                let req = CleanupUploadsRequest { bucket: bucket.clone(), older_than_ms: before };
                let n = g.cleanup_incomplete_uploads(req).await.map_err(|e| c.err(e))?.into_inner().aborted;
                println!("{bucket}: aborted {n} incomplete multipart upload(s)");
            }
        }
    }
    Ok(())
}

fn node_rows(nodes: &[NodePlan], partitions: impl Fn(&NodePlan) -> String) -> Vec<Vec<String>> {
    nodes
        .iter()
        .map(|n| {
            vec![
                n.node_id.clone(),
                n.zone.clone(),
                human(n.capacity),
                if n.tags.is_empty() { "-".into() } else { n.tags.join(",") },
                partitions(n),
                if n.synced_version > 0 { n.synced_version.to_string() } else { "-".into() },
                if n.rpc_addr.is_empty() { "-".into() } else { n.rpc_addr.clone() },
            ]
        })
        .collect()
}

const NODE_HEADERS: [&str; 7] = ["NODE", "ZONE", "CAPACITY", "TAGS", "PARTITIONS", "SYNCED", "ADDRESS"];

pub(crate) fn print_plan(p: &LayoutPlan) {
    println!("== Current layout: version {}  (replication factor {}) ==", p.version, p.replication_factor);
    if p.live_versions.len() > 1 {
        println!("Live layout versions: {} (data is moving)", versions(&p.live_versions));
    }
    if p.nodes.is_empty() {
        println!("No roles assigned yet.");
    } else {
        let rows = node_rows(&p.nodes, |n| n.partitions_now.to_string());
        table(&NODE_HEADERS, &rows);
        if p.live_versions.len() > 1 {
            for n in p.nodes.iter().filter(|n| !n.sync_progress.is_empty()) {
                println!("{}: sync {}", n.node_id, n.sync_progress);
            }
        }
    }
    if p.staged.is_empty() && p.staged_replication_factor == 0 {
        println!();
        println!("No staged changes.");
        return;
    }
    println!();
    println!("== Staged changes (not applied) ==");
    if p.staged_replication_factor > 0 {
        println!("  replication factor {} -> {}", p.replication_factor, p.staged_replication_factor);
    }
    for s in &p.staged {
        if s.remove {
            println!("  remove {}", s.node_id);
        } else {
            let tags = if s.tags.is_empty() { String::new() } else { format!(" tags={}", s.tags.join(",")) };
            println!("  assign {} zone={} capacity={}{tags}", s.node_id, s.zone, human(s.capacity));
        }
    }
    println!();
    if !p.error.is_empty() {
        println!("Cannot apply: {}", p.error);
        return;
    }
    let factor = if p.staged_replication_factor > 0 { p.staged_replication_factor } else { p.replication_factor };
    println!("== After applying them: version {}  (replication factor {factor}) ==", p.version + 1);
    let rows = node_rows(&p.after, |n| format!("{} -> {}", n.partitions_now, n.partitions_after));
    table(&NODE_HEADERS, &rows);
    println!("Partition replicas moving: {}", p.partitions_moving);
    println!("Apply with: hangar layout apply --version {}", p.version + 1);
}

pub async fn layout(c: &Admin, cmd: LayoutCommand) -> CliResult {
    let mut g = c.client();
    let plan = match cmd {
        LayoutCommand::Assign { node, zone, capacity, tags } => {
            g.stage_layout_change(StagedRole { node_id: node, zone, capacity, tags, remove: false }).await
        }
        LayoutCommand::Remove { node } => {
            g.stage_layout_change(StagedRole { node_id: node, remove: true, ..Default::default() }).await
        }
        LayoutCommand::Config { replication_factor } => {
            g.stage_replication_factor(StageReplicationFactorRequest { replication_factor }).await
        }
        LayoutCommand::Show => g.show_layout(ShowLayoutRequest {}).await,
        LayoutCommand::Apply { version } => g.apply_layout(ApplyLayoutRequest { version }).await,
        LayoutCommand::Revert { yes } => {
            if !yes {
                return Err("`layout revert` drops every staged change; add --yes to confirm".into());
            }
            g.revert_layout(ShowLayoutRequest {}).await
        }
        LayoutCommand::History => {
            let v = g.layout_versions(ShowLayoutRequest {}).await.map_err(|e| c.err(e))?.into_inner().versions;
            let rows: Vec<Vec<String>> = v
                .iter()
                .rev()
                .map(|l| {
                    vec![
                        l.version.to_string(),
                        l.state.clone(),
                        l.replication_factor.to_string(),
                        l.nodes.to_string(),
                        if l.zones.is_empty() { "-".into() } else { l.zones.clone() },
                        if l.applied_ms > 0 { ms_to_date(l.applied_ms) } else { "-".into() },
                    ]
                })
                .collect();
            table(&["VERSION", "STATE", "REPLICATION", "NODES", "ZONES", "APPLIED"], &rows);
            return Ok(());
        }
    };
    print_plan(&plan.map_err(|e| c.err(e))?.into_inner());
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn capacities() {
        assert_eq!(super::parse_capacity("1T"), Ok(1_000_000_000_000));
        assert_eq!(super::parse_capacity("500G"), Ok(500_000_000_000));
        assert_eq!(super::parse_capacity("2TiB"), Ok(2 * 1024u64.pow(4)));
        assert_eq!(super::parse_capacity("1.5k"), Ok(1500));
        assert!(super::parse_capacity("big").is_err());
        assert!(super::parse_capacity("0").is_err());
    }

    #[test]
    fn limits_and_ages() {
        assert_eq!(super::parse_size_limit("none"), Ok(0));
        assert_eq!(super::parse_size_limit("10M"), Ok(10_000_000));
        assert_eq!(super::parse_count_limit("5"), Ok(5));
        assert!(super::parse_count_limit("five").is_err());
        assert_eq!(super::parse_age("1d").map(|d| d.as_secs()), Ok(86_400));
        assert!(super::parse_age("soon").is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(super::ms_to_date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::ms_to_date(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn sizes() {
        assert_eq!(super::human(999), "999 B");
        assert_eq!(super::human(270_600_000_000), "270.6 GB");
    }
}
