//! Admin verbs: thin calls to the control plane's AdminService.

use std::net::SocketAddr;
use std::path::Path;

use clap::{Args, Subcommand};
use hangar_common::rpc::{AdminGrpc, admin_client, lazy_channel};
use hangar_proto::control::*;

pub type CliResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create a key and print its secret.
    Create {
        name: String,
        /// Import an existing access key id (with --secret).
        #[arg(long, requires = "secret")]
        id: Option<String>,
        #[arg(long, requires = "id")]
        secret: Option<String>,
    },
    /// List keys.
    List,
    /// Show a key (by id or name), its secret and its buckets.
    Info { key: String },
    /// Delete a key.
    Delete { key: String },
    /// Grant a key rights beyond buckets.
    Allow(KeyFlags),
    /// Revoke them.
    Deny(KeyFlags),
}

#[derive(Args)]
pub struct KeyFlags {
    /// May create buckets through S3.
    #[arg(long, required = true)]
    create_bucket: bool,
    key: String,
}

#[derive(Subcommand)]
pub enum LayoutCommand {
    /// Stage a role for a data node (id or unique id prefix).
    Assign {
        node: String,
        #[arg(long)]
        zone: String,
        /// Bytes, or with a unit: 500G, 1T, 2TiB.
        #[arg(long, value_parser = parse_capacity)]
        capacity: u64,
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Stage the removal of a node from the layout.
    Remove { node: String },
    /// Current roles, staged changes, and partitions per node now and after.
    Show,
    /// Apply the staged changes as layout version N (the current version + 1).
    Apply {
        #[arg(long)]
        version: u64,
    },
    /// Drop the staged changes.
    Revert,
}

/// Parses `1T`, `500G`, `2TiB`, `1000000` (decimal units, binary with `i`).
pub fn parse_capacity(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a capacity like 500G or 1T"))?;
    let mult: f64 = match unit.to_ascii_lowercase().trim_end_matches('b') {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "p" => 1e15,
        "ki" => 1024f64,
        "mi" => 1024f64.powi(2),
        "gi" => 1024f64.powi(3),
        "ti" => 1024f64.powi(4),
        "pi" => 1024f64.powi(5),
        _ => return Err(format!("`{unit}` is not a unit (use K, M, G, T, P or Ki, Mi, Gi, Ti, Pi)")),
    };
    let v = (n * mult).round();
    if v < 1.0 {
        return Err("capacity must be above zero".into());
    }
    Ok(v as u64)
}

#[derive(Subcommand)]
pub enum BucketCommand {
    Create {
        name: String,
    },
    List,
    Info {
        bucket: String,
    },
    /// Delete an empty bucket.
    Delete {
        bucket: String,
    },
    /// Grant a key rights on a bucket.
    Allow(BucketFlags),
    /// Revoke a key's rights on a bucket.
    Deny(BucketFlags),
}

#[derive(Args)]
pub struct BucketFlags {
    #[arg(long)]
    read: bool,
    #[arg(long)]
    write: bool,
    #[arg(long)]
    owner: bool,
    bucket: String,
    /// The key (id or name).
    #[arg(long)]
    key: String,
}

/// Reaches the admin API with the token from HANGAR_ADMIN_TOKEN or the data directory.
pub fn connect(addr: SocketAddr, data_dir: &Path) -> Result<AdminGrpc, Box<dyn std::error::Error>> {
    let token = match std::env::var("HANGAR_ADMIN_TOKEN") {
        Ok(t) if !t.is_empty() => t,
        _ => {
            let path = data_dir.join("meta").join("admin_token");
            std::fs::read_to_string(&path)
                .map_err(|e| {
                    format!("no admin token: set HANGAR_ADMIN_TOKEN or point --data-dir at the server's directory ({}: {e})", path.display())
                })?
                .trim()
                .to_string()
        }
    };
    Ok(admin_client(lazy_channel(&addr.to_string())?, &token)?)
}

fn status_err(s: tonic::Status) -> Box<dyn std::error::Error> {
    match s.code() {
        tonic::Code::Unavailable => format!("cannot reach the control plane: {}", s.message()).into(),
        _ => s.message().to_string().into(),
    }
}

fn ms_to_date(ms: u64) -> String {
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

fn print_key(k: &KeyInfo) {
    println!("Key ID: {}", k.access_key_id);
    if !k.secret_access_key.is_empty() {
        println!("Secret key: {}", k.secret_access_key);
    }
    println!("Name: {}", k.name);
    println!("Created: {}", ms_to_date(k.created_ms));
    println!("Can create buckets: {}", k.allow_create_bucket);
    for b in &k.buckets {
        println!("  {}  {}  {}", rights(b.read, b.write, b.owner), b.bucket_name, b.bucket_id);
    }
}

fn print_bucket(b: &BucketInfo, usage: bool) {
    println!("Bucket: {}", b.name);
    println!("ID: {}", b.id);
    println!("Created: {}", ms_to_date(b.created_ms));
    if usage {
        println!("Objects: {}", b.objects);
        println!("Bytes: {}", b.bytes);
    }
    for k in &b.keys {
        println!("  {}  {}  {}", rights(k.read, k.write, k.owner), k.access_key_id, k.key_name);
    }
}

fn versions(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

pub async fn status(c: &AdminGrpc) -> CliResult {
    let s = c.clone().status(StatusRequest {}).await.map_err(status_err)?.into_inner();
    println!("Layout version: {}  (replication factor {})", s.layout_version, s.replication_factor);
    if s.live_versions.len() > 1 {
        println!(
            "Live layout versions: {} (data is moving; reads use version {})",
            versions(&s.live_versions),
            s.read_version
        );
    }
    println!(
        "{:<20} {:<16} {:<22} {:<8} {:>14} {:>10} {:<8} LAST SEEN",
        "ID", "HOSTNAME", "ADDRESS", "ZONE", "CAPACITY", "PARTITIONS", "HEALTH"
    );
    for n in s.nodes {
        let info = n.node.unwrap_or_default();
        let role = NodeRole::try_from(info.role).map(|r| r.as_str_name()).unwrap_or("?");
        println!(
            "{:<20} {:<16} {:<22} {:<8} {:>14} {:>10} {:<8} {}  {}",
            info.id,
            info.hostname,
            info.rpc_addr,
            n.zone,
            n.capacity,
            n.partitions,
            if n.healthy { "healthy" } else { "failed" },
            if n.last_seen_ms > 0 { ms_to_date(n.last_seen_ms) } else { "never".into() },
            role.trim_start_matches("NODE_ROLE_").to_lowercase()
        );
        if info.role == NodeRole::Data as i32 {
            let sync = n.workers.iter().find(|w| w.name == "sync").map(|w| w.progress.as_str()).unwrap_or_default();
            println!("    layout: enforces version {}, synced version {}  {sync}", n.acked_version, n.synced_version);
        }
        for w in n.workers.iter().filter(|w| !w.last_error.is_empty() && w.state != "idle" && w.state != "busy") {
            println!(
                "    worker {} is {}: {} errors, last: {}",
                w.name,
                w.state.to_uppercase(),
                w.errors,
                w.last_error
            );
        }
    }
    Ok(())
}

pub async fn key(c: &AdminGrpc, cmd: KeyCommand) -> CliResult {
    let mut c = c.clone();
    match cmd {
        KeyCommand::Create { name, id, secret } => {
            let req = CreateKeyRequest {
                name,
                access_key_id: id.unwrap_or_default(),
                secret_access_key: secret.unwrap_or_default(),
            };
            print_key(&c.create_key(req).await.map_err(status_err)?.into_inner());
        }
        KeyCommand::List => {
            let keys = c.list_keys(ListKeysRequest {}).await.map_err(status_err)?.into_inner().keys;
            println!("{:<28} NAME", "ID");
            for k in keys {
                println!("{:<28} {}", k.access_key_id, k.name);
            }
        }
        KeyCommand::Info { key } => print_key(&c.get_key(KeyRef { key }).await.map_err(status_err)?.into_inner()),
        KeyCommand::Delete { key } => {
            c.delete_key(KeyRef { key: key.clone() }).await.map_err(status_err)?;
            println!("Deleted key {key}");
        }
        KeyCommand::Allow(f) => print_key(
            &c.set_key_create_bucket(SetKeyCreateBucketRequest { key: f.key, allow: true })
                .await
                .map_err(status_err)?
                .into_inner(),
        ),
        KeyCommand::Deny(f) => print_key(
            &c.set_key_create_bucket(SetKeyCreateBucketRequest { key: f.key, allow: false })
                .await
                .map_err(status_err)?
                .into_inner(),
        ),
    }
    Ok(())
}

pub async fn bucket(c: &AdminGrpc, cmd: BucketCommand) -> CliResult {
    let mut c = c.clone();
    let grant = |f: BucketFlags, allow: bool| SetBucketPermissionRequest {
        bucket: f.bucket,
        key: f.key,
        allow,
        read: f.read,
        write: f.write,
        owner: f.owner,
    };
    match cmd {
        BucketCommand::Create { name } => {
            print_bucket(&c.create_bucket(CreateBucketRequest { name }).await.map_err(status_err)?.into_inner(), false)
        }
        BucketCommand::List => {
            let buckets = c.list_buckets(ListBucketsRequest {}).await.map_err(status_err)?.into_inner().buckets;
            println!("{:<40} {:<34} CREATED", "NAME", "ID");
            for b in buckets {
                println!("{:<40} {:<34} {}", b.name, b.id, ms_to_date(b.created_ms));
            }
        }
        BucketCommand::Info { bucket } => {
            print_bucket(&c.get_bucket(BucketRef { bucket }).await.map_err(status_err)?.into_inner(), true)
        }
        BucketCommand::Delete { bucket } => {
            c.delete_bucket(BucketRef { bucket: bucket.clone() }).await.map_err(status_err)?;
            println!("Deleted bucket {bucket}");
        }
        BucketCommand::Allow(f) => {
            print_bucket(&c.set_bucket_permission(grant(f, true)).await.map_err(status_err)?.into_inner(), false)
        }
        BucketCommand::Deny(f) => {
            print_bucket(&c.set_bucket_permission(grant(f, false)).await.map_err(status_err)?.into_inner(), false)
        }
    }
    Ok(())
}

fn human(bytes: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}

fn print_plan(p: &LayoutPlan) {
    println!("Layout version: {}  (replication factor {})", p.version, p.replication_factor);
    if p.live_versions.len() > 1 {
        println!("Live layout versions: {} (data is moving)", versions(&p.live_versions));
    }
    println!("{:<20} {:<8} {:>10} {:>8} {:>8} {:>7}  ADDRESS", "NODE", "ZONE", "CAPACITY", "NOW", "AFTER", "SYNCED");
    for n in &p.nodes {
        println!(
            "{:<20} {:<8} {:>10} {:>8} {:>8} {:>7}  {}  {}",
            n.node_id,
            n.zone,
            human(n.capacity),
            n.partitions_now,
            n.partitions_after,
            n.synced_version,
            n.rpc_addr,
            n.sync_progress
        );
    }
    if p.staged.is_empty() {
        println!("No staged changes.");
        return;
    }
    println!("Staged changes:");
    for s in &p.staged {
        if s.remove {
            println!("  remove {}", s.node_id);
        } else {
            println!("  assign {} zone={} capacity={} tags={:?}", s.node_id, s.zone, human(s.capacity), s.tags);
        }
    }
    if p.error.is_empty() {
        println!("Partitions moving: {}", p.partitions_moving);
        println!("Apply with: hangar layout apply --version {}", p.version + 1);
    } else {
        println!("Cannot apply: {}", p.error);
    }
}

pub async fn layout(c: &AdminGrpc, cmd: LayoutCommand) -> CliResult {
    let mut c = c.clone();
    let plan = match cmd {
        LayoutCommand::Assign { node, zone, capacity, tags } => {
            c.stage_layout_change(StagedRole { node_id: node, zone, capacity, tags, remove: false }).await
        }
        LayoutCommand::Remove { node } => {
            c.stage_layout_change(StagedRole { node_id: node, remove: true, ..Default::default() }).await
        }
        LayoutCommand::Show => c.show_layout(ShowLayoutRequest {}).await,
        LayoutCommand::Apply { version } => c.apply_layout(ApplyLayoutRequest { version }).await,
        LayoutCommand::Revert => c.revert_layout(ShowLayoutRequest {}).await,
    };
    print_plan(&plan.map_err(status_err)?.into_inner());
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
    fn dates() {
        assert_eq!(super::ms_to_date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::ms_to_date(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
    }
}
