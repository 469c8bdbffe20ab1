//! Group commit: writers that made their changes to the metadata database share fsyncs.
//!
//! A writer's changes are in sled's memory when it calls `flush`; it then waits for a flush
//! that *started* after the call, which makes them durable. One flush runs at a time, in a
//! task of its own (a writer that goes away does not stop it); every writer that arrives
//! while it runs is served by the next one, so N concurrent writers cost about two fsyncs,
//! not N. (sled shares fsyncs between concurrent `flush` calls only partly: 16 writers
//! committed 1.8 times as fast as one, see BENCHMARKS.md.)

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::DataError;

/// The last flush finished: its number and whether it failed.
#[derive(Clone)]
struct Round {
    number: u64,
    failed: Option<Arc<sled::Error>>,
}

#[derive(Default)]
struct State {
    /// The number of the flush the latest writer waits for.
    asked: u64,
    /// The number of the latest flush started.
    started: u64,
    running: bool,
}

#[derive(Clone)]
pub struct GroupCommit {
    db: sled::Db,
    state: Arc<Mutex<State>>,
    done: Arc<watch::Sender<Round>>,
}

impl GroupCommit {
    pub fn new(db: sled::Db) -> Self {
        Self { db, state: Default::default(), done: Arc::new(watch::channel(Round { number: 0, failed: None }).0) }
    }

    /// Makes everything written to the database before this call durable.
    pub async fn flush(&self) -> Result<(), DataError> {
        let mut rx = self.done.subscribe();
        let want = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            // The next flush to start begins after this moment, so after the caller's writes.
            s.asked = s.started + 1;
            if !s.running {
                s.running = true;
                tokio::spawn(self.clone().run());
            }
            s.asked
        };
        let round = rx
            .wait_for(|r| r.number >= want)
            .await
            .map_err(|_| DataError::Invalid("the metadata flusher stopped".into()))?
            .clone();
        match round.failed {
            None => Ok(()),
            Some(e) => Err(DataError::Sled(copy(&e))),
        }
    }

    /// Flushes while writers wait for a flush not yet started.
    async fn run(self) {
        loop {
            let number = {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if s.asked <= s.started {
                    s.running = false;
                    return;
                }
                s.started = s.asked;
                s.started
            };
            // sled 0.34's `flush_async` deadlocks when several run at once (spacejam/sled#1308):
            // the blocking flush runs on the blocking pool.
            let db = self.db.clone();
            let failed = match tokio::task::spawn_blocking(move || db.flush()).await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(Arc::new(e)),
                Err(e) => Some(Arc::new(sled::Error::ReportableBug(format!("flush task failed: {e}")))),
            };
            self.done.send_replace(Round { number, failed });
        }
    }
}

/// The same error for another waiter, keeping the OS error code (a full disk is told apart
/// by it).
fn copy(e: &sled::Error) -> sled::Error {
    match e {
        sled::Error::Io(io) => sled::Error::Io(match io.raw_os_error() {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => std::io::Error::new(io.kind(), io.to_string()),
        }),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many writers at once: every one is answered, and the flushes are fewer than the
    /// writers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_flushes_and_each_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let commit = GroupCommit::new(db.clone());
        let writers: Vec<_> = (0..64u32)
            .map(|i| {
                let (db, commit) = (db.clone(), commit.clone());
                tokio::spawn(async move {
                    db.insert(i.to_be_bytes(), &b"v"[..]).unwrap();
                    commit.flush().await.unwrap();
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let flushes = commit.state.lock().unwrap().started;
        assert!((1..64).contains(&flushes), "{flushes} flushes for 64 writers");
        assert_eq!(db.len(), 64);
    }
}
