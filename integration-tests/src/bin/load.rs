//! `hangar-load`: a bounded S3 load generator.
//!
//! Uploads and/or downloads `--count` objects of `--size` bytes with
//! `--concurrency` requests in flight, then prints throughput and latency.
//! Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
//! AWS_DEFAULT_REGION, as printed by `hangar server`.

use std::fmt::Display;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::client::customize::CustomizableOperation;
use aws_sdk_s3::config::{Credentials, RequestChecksumCalculation};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use hangar_integration_tests::util;

/// Bodies larger than this are streamed from a temp file instead of memory.
const IN_MEMORY_LIMIT: u64 = 8 << 20;

#[derive(Parser, Debug)]
#[command(name = "hangar-load", about = "Bounded PUT/GET load against an S3 endpoint")]
struct Args {
    /// S3 endpoint, e.g. http://127.0.0.1:3900; several, comma-separated, take the requests
    /// in turn (object i goes to endpoint i mod n).
    #[arg(long, value_delimiter = ',', required = true)]
    endpoint: Vec<String>,
    /// Bucket to use; created if it does not exist.
    #[arg(long)]
    bucket: String,
    /// Object size: bytes, or with a suffix (4KiB, 64MiB, 1GiB, 10MB, 1G).
    #[arg(long, value_parser = parse_size)]
    size: u64,
    /// Number of objects.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    #[arg(long, value_enum, default_value_t = Op::Both)]
    op: Op,
    /// Upload with multipart uploads of this part size (same suffixes as --size).
    #[arg(long, value_parser = parse_size)]
    multipart_part_size: Option<u64>,
    /// Key prefix for the objects.
    #[arg(long, default_value = "hangar-load/")]
    prefix: String,
    /// Give every object different content (its number in the first bytes), so no block
    /// is shared between objects; otherwise all carry the same bytes and are stored once.
    /// (Objects over 8 MiB: one payload file per object, at most 2 GiB in all.)
    #[arg(long)]
    unique: bool,
    /// Seed of the payload's bytes: a run with another seed writes bytes no run with this
    /// one wrote (so repeated runs are not deduplicated against each other).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// PUT and UploadPart bodies go as plain Content-Length bodies marked UNSIGNED-PAYLOAD,
    /// without a checksum trailer (a form every S3 server takes); otherwise the SDK's
    /// default (aws-chunked with a CRC32 trailer over http).
    #[arg(long)]
    unsigned_payload: bool,
    /// Every request on a connection of its own (`Connection: close`): what a client that
    /// keeps no connections open costs a server.
    #[arg(long)]
    fresh_connections: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Op {
    Put,
    Get,
    Both,
    /// `count` listings of every key under the prefix (ListObjectsV2 pages of 1000 keys).
    List,
}

/// Parses `123`, `4KiB`, `64MiB`, `1GiB`, `10KB`, `5M`... (K/M/G alone are binary).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => return Err(format!("unknown size suffix {other:?} in {s:?}")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("size {s:?} overflows"))
}

/// The payload PUTs send: in memory when small, temp files otherwise (object i sends file
/// i mod n).
enum Payload {
    Memory(Bytes),
    Files(Vec<tempfile::NamedTempFile>),
}

impl Payload {
    fn create(size: u64, seed: u64, files: usize) -> std::io::Result<Payload> {
        if size <= IN_MEMORY_LIMIT {
            return Ok(Payload::Memory(Bytes::from(pseudo_random(size as usize, seed))));
        }
        use std::io::Write;
        let chunk = 4 << 20;
        // Every 4 MiB chunk of every file from its own seed.
        let mut chunk_seed = (seed - 1) << 32;
        let mut all = Vec::new();
        for _ in 0..files.max(1) {
            let mut file = tempfile::NamedTempFile::new()?;
            let mut written = 0u64;
            while written < size {
                let n = chunk.min(size - written) as usize;
                chunk_seed += 1;
                file.write_all(&pseudo_random(n, chunk_seed))?;
                written += n as u64;
            }
            file.flush()?;
            all.push(file);
        }
        Ok(Payload::Files(all))
    }

    /// A streaming body of object `i`: `len` bytes starting at `offset`.
    async fn body(&self, i: usize, offset: u64, len: u64) -> Result<ByteStream, String> {
        match self {
            Payload::Memory(b) => Ok(ByteStream::from(b.slice(offset as usize..(offset + len) as usize))),
            Payload::Files(files) => ByteStream::read_from()
                .path(PathBuf::from(files[i % files.len()].path()))
                .offset(offset)
                .length(Length::Exact(len))
                .build()
                .await
                .map_err(|e| format!("open payload file: {e}")),
        }
    }
}

/// Cheap deterministic filler (SplitMix64) so payload generation is not the bottleneck.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    util::splitmix64_bytes(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), len)
}

/// For `map_err`: "WHAT: the error with its sources".
fn failed<E: std::error::Error>(what: impl Display) -> impl FnOnce(E) -> String {
    move |e| format!("{what}: {}", DisplayErrorContext(e))
}

struct Ctx {
    s3: Vec<Client>,
    args: Args,
    payload: Payload,
}

impl Ctx {
    /// The request on a connection of its own with --fresh-connections.
    fn tune<T, E, B>(&self, op: CustomizableOperation<T, E, B>) -> CustomizableOperation<T, E, B> {
        if !self.args.fresh_connections {
            return op;
        }
        op.mutate_request(|r| {
            r.headers_mut().insert("connection", "close");
        })
    }

    /// The client of object (or request) `i`.
    fn s3(&self, i: usize) -> &Client {
        &self.s3[i % self.s3.len()]
    }

    fn key(&self, i: usize) -> String {
        format!("{}obj-{i:08}", self.args.prefix)
    }

    /// The body of single PUT number `i`.
    async fn body_of(&self, i: usize, size: u64) -> Result<ByteStream, String> {
        match &self.payload {
            Payload::Memory(b) if self.args.unique => {
                let mut v = b.to_vec();
                for (d, s) in v.iter_mut().zip((i as u64).to_le_bytes()) {
                    *d ^= s;
                }
                Ok(ByteStream::from(v))
            }
            _ => self.payload.body(i, 0, size).await,
        }
    }

    async fn put(&self, i: usize) -> Result<u64, String> {
        let size = self.args.size;
        let key = self.key(i);
        let Some(part_size) = self.args.multipart_part_size else {
            let put = self
                .s3(i)
                .put_object()
                .bucket(&self.args.bucket)
                .key(&key)
                .content_length(size as i64)
                .body(self.body_of(i, size).await?)
                .customize();
            let put = if self.args.unsigned_payload { put.disable_payload_signing() } else { put };
            self.tune(put).send().await.map_err(failed(format_args!("put {key}")))?;
            return Ok(size);
        };

        let create = self.s3(i).create_multipart_upload().bucket(&self.args.bucket).key(&key).customize();
        let upload = self.tune(create).send().await.map_err(failed(format_args!("create upload {key}")))?;
        let upload_id = upload.upload_id().ok_or("no upload id")?.to_string();
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        // Parts go one after another; concurrency comes from parallel objects.
        while offset < size || number == 1 {
            let len = part_size.min(size - offset);
            let part = self
                .s3(i)
                .upload_part()
                .bucket(&self.args.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .part_number(number)
                .content_length(len as i64)
                .body(self.payload.body(i, offset, len).await?)
                .customize();
            let out = self
                .tune(if self.args.unsigned_payload { part.disable_payload_signing() } else { part })
                .send()
                .await
                .map_err(failed(format_args!("upload part {number} of {key}")))?;
            parts.push(CompletedPart::builder().part_number(number).set_e_tag(out.e_tag().map(str::to_string)).build());
            offset += len;
            number += 1;
        }
        let complete = self
            .s3(i)
            .complete_multipart_upload()
            .bucket(&self.args.bucket)
            .key(&key)
            .upload_id(&upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .customize();
        self.tune(complete).send().await.map_err(failed(format_args!("complete {key}")))?;
        Ok(size)
    }

    /// Lists every key under the prefix, page after page; counts the keys as "bytes".
    async fn list(&self, i: usize) -> Result<u64, String> {
        let (mut keys, mut token) = (0, None);
        loop {
            let page = self
                .s3(i)
                .list_objects_v2()
                .bucket(&self.args.bucket)
                .prefix(&self.args.prefix)
                .max_keys(1000)
                .set_continuation_token(token)
                .customize();
            let out = self.tune(page).send().await.map_err(failed(format_args!("list {}", self.args.prefix)))?;
            keys += out.contents().len() as u64;
            token = out.next_continuation_token().map(str::to_string);
            if token.is_none() || !out.is_truncated().unwrap_or(false) {
                return Ok(keys);
            }
        }
    }

    async fn get(&self, i: usize) -> Result<u64, String> {
        let key = self.key(i);
        let get = self.s3(i).get_object().bucket(&self.args.bucket).key(&key).customize();
        let out = self.tune(get).send().await.map_err(failed(format_args!("get {key}")))?;
        // Count bytes chunk by chunk; never hold the whole object.
        let mut body = out.body;
        let mut total = 0u64;
        while let Some(chunk) = body.next().await {
            total += chunk.map_err(|e| format!("read {key}: {e}"))?.len() as u64;
        }
        if total != self.args.size {
            return Err(format!("get {key}: got {total} bytes, expected {}", self.args.size));
        }
        Ok(total)
    }
}

#[derive(Default)]
struct Stats {
    latencies: Vec<Duration>,
    bytes: u64,
    errors: usize,
    elapsed: Duration,
}

impl Stats {
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort();
        // Nearest-rank percentile.
        let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
        sorted[rank.min(sorted.len()) - 1].as_secs_f64() * 1000.0
    }

    fn print(&self, label: &str) {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let ops = self.latencies.len();
        println!(
            "{label}: ops={ops} errors={} bytes={} seconds={secs:.3} ops/s={:.2} MiB/s={:.2} p50={:.2}ms p99={:.2}ms",
            self.errors,
            self.bytes,
            ops as f64 / secs,
            self.bytes as f64 / (1024.0 * 1024.0) / secs,
            self.percentile_ms(50.0),
            self.percentile_ms(99.0),
        );
    }
}

/// Runs `count` operations with `concurrency` in flight.
async fn run<F, Fut>(ctx: &Arc<Ctx>, op: F) -> Stats
where
    F: Fn(Arc<Ctx>, usize) -> Fut,
    Fut: std::future::Future<Output = Result<u64, String>>,
{
    let start = Instant::now();
    let mut stats = Stats::default();
    let mut results = futures::stream::iter(0..ctx.args.count)
        .map(|i| {
            let fut = op(ctx.clone(), i);
            async move {
                let t = Instant::now();
                (fut.await, t.elapsed())
            }
        })
        .buffer_unordered(ctx.args.concurrency.max(1));
    while let Some((result, latency)) = results.next().await {
        match result {
            Ok(bytes) => {
                stats.bytes += bytes;
                stats.latencies.push(latency);
            }
            Err(e) => {
                // Report the first few errors; the count says the rest.
                if stats.errors < 5 {
                    eprintln!("error: {e}");
                }
                stats.errors += 1;
            }
        }
    }
    stats.elapsed = start.elapsed();
    stats
}

async fn ensure_bucket(s3: &Client, bucket: &str) -> Result<(), String> {
    if s3.head_bucket().bucket(bucket).send().await.is_ok() {
        return Ok(());
    }
    match s3.create_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(e) if util::err_code(&e).as_deref() == Some("BucketAlreadyOwnedByYou") => Ok(()),
        Err(e) => Err(failed(format_args!("create bucket {bucket}"))(e)),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let env = |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set"));
    let creds = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Ok(ak), Ok(sk)) => Credentials::new(ak, sk, None, None, "hangar-load"),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("hangar-load: {e}");
            return ExitCode::from(2);
        }
    };
    let region = env("AWS_DEFAULT_REGION").unwrap_or_else(|_| "us-east-1".to_string());
    if args.multipart_part_size == Some(0) {
        eprintln!("hangar-load: --multipart-part-size must be positive");
        return ExitCode::from(2);
    }
    let large = args.multipart_part_size.is_some() || args.size > IN_MEMORY_LIMIT;
    if args.unique && large && args.size.saturating_mul(args.count as u64) > 2 << 30 {
        eprintln!("hangar-load: --unique with objects over 8 MiB or multipart needs at most 2 GiB in all");
        return ExitCode::from(2);
    }
    let s3: Vec<Client> = args
        .endpoint
        .iter()
        .map(|e| {
            let mut conf = util::s3_config(e, &region, creds.clone());
            if args.unsigned_payload {
                conf = conf.request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
            }
            Client::from_conf(conf.build())
        })
        .collect();
    if let Err(e) = ensure_bucket(&s3[0], &args.bucket).await {
        eprintln!("hangar-load: {e}");
        return ExitCode::FAILURE;
    }

    let payload = if matches!(args.op, Op::Get | Op::List) {
        Payload::Memory(Bytes::new())
    } else {
        let files = if args.unique { args.count } else { 1 };
        match Payload::create(args.size, args.seed.max(1), files) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("hangar-load: cannot create payload: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let op = args.op;
    let ctx = Arc::new(Ctx { s3, args, payload });
    let mut failed = false;
    if matches!(op, Op::Put | Op::Both) {
        let stats = run(&ctx, |c, i| async move { c.put(i).await }).await;
        stats.print("PUT");
        failed |= stats.errors > 0;
    }
    if matches!(op, Op::Get | Op::Both) {
        let stats = run(&ctx, |c, i| async move { c.get(i).await }).await;
        stats.print("GET");
        failed |= stats.errors > 0;
    }
    if op == Op::List {
        let stats = run(&ctx, |c, i| async move { c.list(i).await }).await;
        stats.print("LIST");
        failed |= stats.errors > 0;
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn percentiles() {
        let stats = Stats { latencies: (1..=100).map(Duration::from_millis).collect(), ..Stats::default() };
        assert_eq!(stats.percentile_ms(50.0), 50.0);
        assert_eq!(stats.percentile_ms(99.0), 99.0);
    }
}
