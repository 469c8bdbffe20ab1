//! Layout fencing. Every write carries the writer's newest layout version; once this node
//! knows version v it refuses writes made with an older one, so a writer that has not yet
//! heard of v cannot get a write acknowledged by the old replicas alone. The node
//! acknowledges v to the control plane (`acked_version`) only after every write it accepted
//! under an older version has finished: from then on, what its old replica sets hold is
//! final, and nodes that gain partitions in v can copy them without missing anything.
//!
//! Reads carry the version too: a reader whose view is older than every live version (the
//! versions it knows were retired, and nodes may have dropped what they moved away) is
//! refused the same way, instead of being answered from data this node no longer keeps.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Default)]
struct State {
    current: u64,
    /// The oldest live version.
    oldest: u64,
    /// In-flight writes by the layout version they carry.
    in_flight: BTreeMap<u64, usize>,
}

#[derive(Default)]
pub struct WriteGate {
    state: Mutex<State>,
    finished: Notify,
}

/// A write in progress; finishing it (dropping the guard) may let an ack go out.
pub struct Admitted {
    gate: Arc<WriteGate>,
    version: u64,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut s = self.gate.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = s.in_flight.get_mut(&self.version) {
            *n -= 1;
            if *n == 0 {
                s.in_flight.remove(&self.version);
            }
        }
        drop(s);
        self.gate.finished.notify_waiters();
    }
}

impl WriteGate {
    pub fn current(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).current
    }

    /// Admits a write made with layout `version`, or refuses it when this node knows a
    /// newer one (the error message starts with `STALE_LAYOUT`).
    pub fn enter(self: &Arc<Self>, version: u64) -> Result<Admitted, tonic::Status> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if version < s.current {
            return Err(tonic::Status::failed_precondition(format!(
                "{}: this node enforces layout version {}, the write was made with {version}",
                hangar_common::STALE_LAYOUT,
                s.current
            )));
        }
        *s.in_flight.entry(version).or_default() += 1;
        Ok(Admitted { gate: self.clone(), version })
    }

    /// From now on, refuses writes made with a layout older than `version`, and reads made
    /// with one older than `oldest` (the oldest live version).
    pub fn advance(&self, version: u64, oldest: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.current = s.current.max(version);
        s.oldest = s.oldest.max(oldest);
    }

    /// Refuses a read made with a layout version that was retired.
    pub fn check_read(&self, version: u64) -> Result<(), tonic::Status> {
        let oldest = self.state.lock().unwrap_or_else(|p| p.into_inner()).oldest;
        if version < oldest {
            return Err(tonic::Status::failed_precondition(format!(
                "{}: layout version {version} was retired; the oldest live one is {oldest}",
                hangar_common::STALE_LAYOUT
            )));
        }
        Ok(())
    }

    /// Waits until no write made with a layout older than `version` is in progress.
    pub async fn drained_below(&self, version: u64) {
        loop {
            let notified = self.finished.notified();
            tokio::pin!(notified);
            // Registered before the check, so a write finishing in between is not missed.
            notified.as_mut().enable();
            {
                let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if s.in_flight.range(..version).next().is_none() {
                    return;
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn old_writes_are_refused_and_drained_before_the_ack() {
        let g = Arc::new(WriteGate::default());
        g.advance(1, 1);
        let old = g.enter(1).unwrap();
        g.advance(2, 1);
        assert!(g.check_read(1).is_ok(), "version 1 is still live");
        assert!(g.enter(1).is_err(), "a write with an outdated layout is refused");
        let _new = g.enter(2).unwrap();
        let g2 = g.clone();
        let waiter = tokio::spawn(async move { g2.drained_below(2).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the ack waits for the old write");
        drop(old);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter).await.unwrap().unwrap();
        g.advance(2, 2);
        assert!(g.check_read(1).is_err(), "version 1 was retired");
    }
}
