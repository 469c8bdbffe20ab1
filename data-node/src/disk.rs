//! Free space: a data node refuses new blocks while the data or metadata disk is below its
//! free-space reserve (`free_space_reserve`), so the disk never fills up: a full disk
//! would fail fsyncs half way and, for sled, leave the metadata store failed until a
//! restart. Metadata writes are refused only below half the reserve, so that deletions,
//! which free space, still go through. The condition shows in `/health` and in
//! `hangar_disk_full`, and clears by itself once space is free again.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hangar_common::disk::{human, space};
use hangar_common::telemetry::metrics;

use crate::DataError;

/// How long a free-space reading is trusted.
const FRESH_FOR: Duration = Duration::from_millis(500);

pub struct DiskGuard {
    dirs: Vec<PathBuf>,
    reserve: u64,
    last: Mutex<Option<(Instant, u64)>>,
    /// Bytes of blocks being written right now: counted against the free space, so many
    /// writes at once cannot overshoot the reserve together.
    in_flight: AtomicU64,
}

/// Space taken for a block being written; given back when dropped.
pub struct Reservation<'a> {
    guard: &'a DiskGuard,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.guard.in_flight.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl DiskGuard {
    pub fn new(dirs: Vec<PathBuf>, reserve: u64) -> Self {
        Self { dirs, reserve, last: Mutex::new(None), in_flight: AtomicU64::new(0) }
    }

    /// The smallest free space among the node's disks (re-read at most every 500 ms).
    pub fn free(&self) -> u64 {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, free)) = *last
            && at.elapsed() < FRESH_FOR
        {
            return free;
        }
        let free = self.dirs.iter().filter_map(|d| space(d).ok()).map(|(_, f)| f).min().unwrap_or(u64::MAX);
        *last = Some((Instant::now(), free));
        let full = free < self.reserve;
        metrics().disk_full.set(full as i64);
        hangar_common::admin_http::set_problem(
            "disk",
            full.then(|| {
                format!(
                    "data disk below its free-space reserve: {} free, {} reserved",
                    human(free),
                    human(self.reserve)
                )
            }),
        );
        free
    }

    /// Refuses metadata writes below half the reserve.
    pub fn check_metadata(&self) -> Result<(), DataError> {
        self.check(0, self.reserve / 2)
    }

    /// Takes `bytes` for a block about to be written, or refuses when that would eat into
    /// the reserve.
    pub fn reserve_block(&self, bytes: u64) -> Result<Reservation<'_>, DataError> {
        let before = self.in_flight.fetch_add(bytes, Ordering::Relaxed);
        let r = Reservation { guard: self, bytes };
        self.check(before + bytes, self.reserve)?;
        Ok(r)
    }

    fn check(&self, need: u64, floor: u64) -> Result<(), DataError> {
        let free = self.free();
        if free.saturating_sub(need) < floor {
            return Err(DataError::Full(format!(
                "{} free, {} must stay free (free_space_reserve)",
                human(free),
                human(self.reserve)
            )));
        }
        Ok(())
    }

    /// Forgets the last reading (after a write failed for lack of space).
    pub fn invalidate(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}
