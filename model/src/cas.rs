//! Compare-and-swap registers, for the few facts that must have exactly one winner however
//! many frontends race: who holds a bucket name, whether a multipart upload was completed
//! or aborted.
//!
//! Each register is a CASPaxos instance (Rystsov, 2018) whose acceptors are the data nodes
//! holding the register's partition. An update is two rounds: `Prepare` with a fresh ballot
//! collects a quorum of promises and the value accepted with the highest ballot (the
//! current value); the caller's change function computes the next value from it; `Accept`
//! writes it with the same ballot. A value accepted by a quorum is committed; a competing
//! update either sees it in its own prepare round or is refused and retries with a higher
//! ballot, so every update is applied to the latest committed value, exactly once. During a
//! layout change both rounds need a quorum of every live version's replicas, like any write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hangar_common::call::Method;
use hangar_common::cluster::Cluster;
use hangar_common::quorum::quorum_sets;
use hangar_common::{Error, Result};
use hangar_proto::metadata::{AcceptRequest, Ballot, PrepareReply, PrepareRequest};
use prost::Message;

use crate::schema::Registers as RegisterTable;
use crate::schema::Schema;

/// What an update does with the current value.
pub enum Change<V> {
    /// Leave it as it is.
    Keep,
    /// Replace it.
    Set(V),
}

/// Updates racing on one register retry this many times before giving up.
const ATTEMPTS: usize = 12;

#[derive(Clone)]
pub struct Registers {
    cluster: Cluster,
    /// This process's proposer id, and the highest round it has seen.
    proposer: u64,
    seen: Arc<AtomicU64>,
}

fn key_of(b: &Option<Ballot>) -> (u64, u64) {
    b.as_ref().map(|b| (b.round, b.proposer)).unwrap_or((0, 0))
}

impl Registers {
    pub fn new(cluster: Cluster) -> Self {
        Self { cluster, proposer: hangar_common::ids::random_u64() | 1, seen: Arc::new(AtomicU64::new(0)) }
    }

    fn next_ballot(&self) -> Ballot {
        let now = hangar_common::ids::next_timestamp();
        let round = self.seen.fetch_max(now, Ordering::SeqCst).max(now) + 1;
        self.seen.fetch_max(round, Ordering::SeqCst);
        Ballot { round, proposer: self.proposer }
    }

    /// Applies `change` to the register's current value (None when it was never written),
    /// atomically; returns what `change` returned for the value it was finally applied to.
    /// `change` may run several times (once per attempt) and must depend only on its input.
    pub async fn update<V, R>(&self, key: &[u8], change: impl Fn(Option<&V>) -> (Change<V>, R)) -> Result<R>
    where
        V: Message + Default,
    {
        let partition = RegisterTable::partition(key);
        let mut last_err = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                // Randomised backoff, so two proposers stop refusing each other.
                let ms = 5u64 << attempt.min(6);
                tokio::time::sleep(Duration::from_millis(ms + hangar_common::ids::random_u64() % ms)).await;
            }
            // Both rounds go to the replica sets of one view, stamped with its version: a node
            // that knows a newer layout refuses them and the update starts over with it.
            let view = self.cluster.view();
            let version = view.version();
            let sets = view.write_sets(partition).map_err(|e| Error::Unavailable(e.to_string()))?;
            let ballot = self.next_ballot();

            // Phase 1: a quorum of promises in every set.
            let (cluster, req) =
                (self.cluster.clone(), PrepareRequest { key: key.to_vec().into(), ballot: Some(ballot) });
            let seen = self.seen.clone();
            let promises = quorum_sets(&sets, move |n| {
                let (cluster, req, seen) = (cluster.clone(), req.clone(), seen.clone());
                async move {
                    let mut c = cluster.meta(&n)?;
                    let r: PrepareReply =
                        cluster.call(&n, Method::Prepare, version, req, |r| async move { c.prepare(r).await }).await?;
                    if !r.promised {
                        seen.fetch_max(key_of(&r.promised_ballot).0, Ordering::SeqCst);
                        return Err(Error::Conflict("a higher ballot was promised".into()));
                    }
                    Ok(r)
                }
            })
            .await;
            let promises = match promises {
                Ok((p, _)) => p,
                Err(e @ Error::StaleLayout(_)) => {
                    self.cluster.wait_newer(version, Duration::from_secs(5)).await;
                    last_err = Some(e);
                    continue;
                }
                Err(e) => {
                    last_err = Some(e);
                    continue;
                }
            };
            let highest = promises.iter().map(|(_, r)| r).max_by_key(|r| key_of(&r.accepted_ballot));
            let current_bytes = highest.filter(|r| r.accepted_ballot.is_some()).map(|r| r.accepted_value.clone());
            let current = match &current_bytes {
                Some(b) => Some(V::decode(b.as_ref())?),
                None => None,
            };
            // Every promise reporting the same accepted ballot means it is committed already.
            let committed = promises
                .iter()
                .all(|(_, r)| key_of(&r.accepted_ballot) == key_of(&highest.and_then(|h| h.accepted_ballot)));
            let (change, result) = change(current.as_ref());
            let value = match change {
                Change::Keep if committed || current_bytes.is_none() => return Ok(result),
                Change::Keep => current_bytes.unwrap_or_default(),
                Change::Set(v) => v.encode_to_vec().into(),
            };

            // Phase 2: the value accepted by a quorum in every set.
            let (cluster, req) =
                (self.cluster.clone(), AcceptRequest { key: key.to_vec().into(), ballot: Some(ballot), value });
            let seen = self.seen.clone();
            let accepted = quorum_sets(&sets, move |n| {
                let (cluster, req, seen) = (cluster.clone(), req.clone(), seen.clone());
                async move {
                    let mut c = cluster.meta(&n)?;
                    let r =
                        cluster.call(&n, Method::Accept, version, req, |r| async move { c.accept(r).await }).await?;
                    if !r.accepted {
                        seen.fetch_max(key_of(&r.promised_ballot).0, Ordering::SeqCst);
                        return Err(Error::Conflict("a higher ballot was promised".into()));
                    }
                    Ok(())
                }
            })
            .await;
            match accepted {
                Ok(_) => return Ok(result),
                Err(e @ Error::StaleLayout(_)) => {
                    self.cluster.wait_newer(version, Duration::from_secs(5)).await;
                    last_err = Some(e);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::Unavailable("register update did not settle".into())))
    }

    /// The register's value as far as a read quorum can tell without taking part in the
    /// protocol: Some when a quorum of the read set reports the same accepted ballot (then it
    /// is committed), None when none has any value. `Err(Conflict)` when the answers
    /// disagree (an update is under way). Never writes; used only as a hint.
    pub async fn peek<V: Message + Default>(&self, key: &[u8]) -> Result<Option<V>> {
        let view = self.cluster.view();
        let version = view.version();
        let nodes = view.read_set(RegisterTable::partition(key)).map_err(|e| Error::Unavailable(e.to_string()))?;
        let (cluster, req) = (self.cluster.clone(), PrepareRequest { key: key.to_vec().into(), ballot: None });
        let (answers, _) = quorum_sets(&[nodes], move |n| {
            let (cluster, req) = (cluster.clone(), req.clone());
            async move {
                let mut c = cluster.meta(&n)?;
                cluster.call(&n, Method::Get, version, req, |r| async move { c.prepare(r).await }).await
            }
        })
        .await?;
        let first = key_of(&answers[0].1.accepted_ballot);
        if !answers.iter().all(|(_, r)| key_of(&r.accepted_ballot) == first) {
            return Err(Error::Conflict("replicas disagree; an update is under way".into()));
        }
        if first == (0, 0) {
            return Ok(None);
        }
        Ok(Some(V::decode(answers[0].1.accepted_value.as_ref())?))
    }
}
