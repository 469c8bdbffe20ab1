//! `hangar-limits`: what this machine allows any object store, measured the way Hangar
//! spends it, so benchmark figures can be read as a fraction of a limit.
//!
//! - fsynced writes to the disk holding `--dir`: 1 MiB writes, each followed by an fsync
//!   (what storing a block costs), and 4 KiB writes each fsynced (a small entry's commit);
//! - blake2b-256 (block ids, checked when a block is written), CRC-64/NVME (what a data node
//!   checks a block's bytes against when it reads them) and MD5 (every PUT's ETag) on one
//!   core, over 1 MiB buffers.
//!
//! Prints one `name: value unit` line per figure.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use hangar_common::hash::{BlockHash, DiskSum};
use md5::Digest;

#[derive(Parser, Debug)]
#[command(name = "hangar-limits", about = "Disk fsync bandwidth and hashing speed per core")]
struct Args {
    /// A directory on the disk to measure (a temporary file is written and removed).
    #[arg(long)]
    dir: PathBuf,
    /// How long each measurement runs, in seconds.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
}

/// Runs `step` (which handles `bytes` bytes) until `limit` has passed; bytes per second.
fn rate(limit: Duration, bytes: usize, mut step: impl FnMut() -> std::io::Result<()>) -> std::io::Result<f64> {
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < limit || done == 0 {
        step()?;
        done += bytes as u64;
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let limit = Duration::from_secs_f64(args.seconds);
    let mib = |r: f64| r / (1024.0 * 1024.0);
    // Not all zeros, so no layer below can shortcut it.
    let buf: Vec<u8> = (0..1 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();

    let file = tempfile::NamedTempFile::new_in(&args.dir)?;
    let mut f = file.as_file();
    let big = rate(limit, buf.len(), || {
        f.write_all(&buf)?;
        f.sync_data()
    })?;
    println!("fsync-write-1MiB: {:.1} MiB/s", mib(big));
    let small = rate(limit, 4096, || {
        f.write_all(&buf[..4096])?;
        f.sync_data()
    })?;
    println!("fsync-write-4KiB: {:.0} writes/s", small / 4096.0);
    drop(file);

    let blake = rate(limit, buf.len(), || {
        std::hint::black_box(BlockHash::of(std::hint::black_box(&buf)));
        Ok(())
    })?;
    println!("blake2b-256-per-core: {:.1} MiB/s", mib(blake));
    let crc = rate(limit, buf.len(), || {
        std::hint::black_box(DiskSum::of(std::hint::black_box(&buf)));
        Ok(())
    })?;
    println!("crc64-per-core: {:.1} MiB/s", mib(crc));
    let md5 = rate(limit, buf.len(), || {
        std::hint::black_box(md5::Md5::digest(std::hint::black_box(&buf)));
        Ok(())
    })?;
    println!("md5-per-core: {:.1} MiB/s", mib(md5));
    println!("cores: {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    Ok(())
}
