//! Free space: a data node refuses new blocks while the data or metadata disk is below its
//! free-space reserve (`free_space_reserve`), so the disk never fills up: a full disk
//! would fail fsyncs half way and, for sled, leave the metadata store failed until a
//! restart. Metadata writes are refused only below half the reserve, so that deletions,
//! which free space, still go through. The free space is read at most every 500 ms; blocks
//! being written and written since the last reading count against it, so a fast disk
//! cannot run past the reserve between two readings. The condition shows in `/health` and
//! in `hangar_disk_full` from the first refused block until a block is taken with a block's
//! worth of room above the reserve (or a
//! reading finds room), and clears by itself once space is free again.

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
    /// Bytes of blocks written since the free space was last read: the cached reading does
    /// not show them yet (a fast disk writes tens of MiB between two readings).
    written_since: AtomicU64,
    /// A block write was refused and none has been taken since: the disk counts as full
    /// even when the refused write's partial data, given back, lifts it over the reserve.
    refused: std::sync::atomic::AtomicBool,
}

/// Space taken for a block being written; given back when dropped.
pub struct Reservation<'a> {
    guard: &'a DiskGuard,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.guard.written_since.fetch_add(self.bytes, Ordering::Relaxed);
        self.guard.in_flight.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl DiskGuard {
    pub fn new(dirs: Vec<PathBuf>, reserve: u64) -> Self {
        Self {
            dirs,
            reserve,
            last: Mutex::new(None),
            in_flight: AtomicU64::new(0),
            written_since: AtomicU64::new(0),
            refused: Default::default(),
        }
    }

    /// The smallest free space among the node's disks (re-read at most every 500 ms, less
    /// what was written since).
    pub fn free(&self) -> u64 {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, free)) = *last
            && at.elapsed() < FRESH_FOR
        {
            return free.saturating_sub(self.written_since.load(Ordering::Relaxed));
        }
        self.written_since.store(0, Ordering::Relaxed);
        let free = self.dirs.iter().filter_map(|d| space(d).ok()).map(|(_, f)| f).min().unwrap_or(u64::MAX);
        *last = Some((Instant::now(), free));
        self.report(free < self.reserve || self.refused.load(Ordering::Relaxed), free);
        free
    }

    /// Shows (or clears) the full disk in `/health` and the metrics.
    fn report(&self, full: bool, free: u64) {
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
        if let Err(e) = self.check(before + bytes, self.reserve) {
            self.refused.store(true, Ordering::Relaxed);
            return Err(e);
        }
        // The disk stops counting as full only with a block's worth of room above the
        // reserve: a block of the refused upload still in flight, taken just after the
        // refusal, must not clear it.
        if self.refused.load(Ordering::Relaxed) {
            let free = self.free();
            if free.saturating_sub(before + bytes) >= self.reserve.saturating_add(bytes)
                && self.refused.swap(false, Ordering::Relaxed)
            {
                self.report(false, free);
            }
        }
        Ok(r)
    }

    fn check(&self, need: u64, floor: u64) -> Result<(), DataError> {
        let free = self.free();
        if free.saturating_sub(need) < floor {
            self.report(true, free);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_written_since_the_last_reading_count() {
        let dir = tempfile::tempdir().unwrap();
        let free = space(dir.path()).unwrap().1;
        // A reserve just under what is free: one 1 MiB block fits, two more in a row do not,
        // although the cached reading has not changed in between.
        let g = DiskGuard::new(vec![dir.path().to_path_buf()], free.saturating_sub(3 << 20));
        drop(g.reserve_block(1 << 20).expect("the first block fits"));
        drop(g.reserve_block(1 << 20).expect("the second block fits"));
        assert!(g.reserve_block(2 << 20).is_err(), "blocks already written were forgotten");
    }
}
