//! Dropping what this node no longer holds. When a partition this node held in some live
//! layout version is held by it in none any more (the version that moved it away was
//! retired, so its new replicas have synced it), the node waits `offload_delay_secs` (for
//! readers that still use the older view) and then deletes its copy: every table's entries
//! of that partition and the block files of that block partition.
//!
//! Only a loss this node has seen happen counts: every partition it held in some history it
//! saw is recorded (on every layout change, and at each step), and stays recorded until it
//! is dropped or held again, so a node that starts with no layout never deletes what it
//! was not seen to hold, and one that saw a version only briefly (applied, then retired
//! between two steps) still drops what that version gave it.

use std::time::Duration;

use hangar_common::ids::now_ms;
use hangar_common::worker::{Step, Worker};
use hangar_model::schema::partition_of;
use hangar_proto::metadata::Table;

use super::Ctx;
use super::release::sled_err;

pub struct Offload {
    pub ctx: Ctx,
    pub delay: Duration,
    /// `held` -> 256 bytes (1: held in some history seen, not dropped since); `lost/<p>` ->
    /// when the loss was seen (ms).
    pub state: sled::Tree,
    pub dropped: u64,
}

const HELD: &[u8] = b"held";
/// The newest layout version seen (big-endian u64).
const SEEN: &[u8] = b"seen";

fn lost_key(p: usize) -> Vec<u8> {
    [b"lost/".as_slice(), &[p as u8]].concat()
}

/// Adds the partitions this node holds in a view of layout `version` to those recorded as
/// held (called on every layout change, so a version seen only briefly is not missed), and
/// records the newest version seen. Atomic in sled: the layout watcher and the worker both
/// change the record.
pub fn note_held(state: &sled::Tree, version: u64, held: &[bool]) -> Result<(), hangar_common::Error> {
    // Most calls add nothing (a heartbeat's new revision, a worker step): no write then.
    let ever = state.get(HELD).map_err(sled_err)?;
    let news = held.iter().enumerate().any(|(p, &h)| h && ever.as_ref().and_then(|e| e.get(p)) != Some(&1));
    if seen_version(state)? >= version && !news {
        return Ok(());
    }
    state
        .update_and_fetch(SEEN, |old| {
            let seen = old.and_then(|v| <[u8; 8]>::try_from(v).ok()).map(u64::from_be_bytes).unwrap_or(0);
            Some(seen.max(version).to_be_bytes().to_vec())
        })
        .map_err(sled_err)?;
    state
        .update_and_fetch(HELD, |old| {
            let mut ever = old.map(<[u8]>::to_vec).unwrap_or_default();
            ever.resize(held.len().max(ever.len()), 0);
            for (p, &h) in held.iter().enumerate() {
                if h {
                    ever[p] = 1;
                }
            }
            Some(ever)
        })
        .map_err(sled_err)?;
    Ok(())
}

/// The newest layout version recorded in `state` (0 before any).
fn seen_version(state: &sled::Tree) -> Result<u64, hangar_common::Error> {
    let v = state.get(SEEN).map_err(sled_err)?;
    Ok(v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok()).map(u64::from_be_bytes).unwrap_or(0))
}

/// Whether losses may be decided on a view of layout `version`: one exists, and it is not
/// older than the newest seen before (a node restarted with an old layout file while the
/// control plane is away waits for it).
fn decides_on(state: &sled::Tree, version: u64) -> Result<bool, hangar_common::Error> {
    Ok(version > 0 && version >= seen_version(state)?)
}

impl Offload {
    /// Records the partitions held in no live version any more, among those ever held.
    /// Nothing is decided on a view older than one seen before (a node restarted with an
    /// old layout file while the control plane is away): false; true when the view is
    /// current.
    fn observe(&self) -> Result<bool, hangar_common::Error> {
        let view = self.ctx.cluster.view();
        if !decides_on(&self.state, view.version())? {
            return Ok(false);
        }
        let now = self.ctx.held(&view);
        note_held(&self.state, view.version(), &now)?;
        let ever = self.state.get(HELD).map_err(sled_err)?.map(|v| v.to_vec()).unwrap_or_default();
        for (p, &held) in now.iter().enumerate() {
            if held {
                // Gained back: nothing to drop.
                self.state.remove(lost_key(p)).map_err(sled_err)?;
            } else if ever.get(p) == Some(&1) && !self.state.contains_key(lost_key(p)).map_err(sled_err)? {
                self.state.insert(lost_key(p), &now_ms().to_be_bytes()).map_err(sled_err)?;
            }
        }
        Ok(true)
    }

    /// Forgets that partition `p` was held (its copy is gone), unless a newer view gives
    /// it back.
    fn forget_held(&self, p: usize) -> Result<(), hangar_common::Error> {
        let view = self.ctx.cluster.view();
        if self.ctx.holds(&view, p) {
            return Ok(());
        }
        self.state
            .update_and_fetch(HELD, |old| {
                let mut ever = old.map(<[u8]>::to_vec).unwrap_or_default();
                if let Some(b) = ever.get_mut(p) {
                    *b = 0;
                }
                Some(ever)
            })
            .map_err(sled_err)?;
        Ok(())
    }

    async fn drop_partition(&mut self, p: usize) -> Result<(), hangar_common::Error> {
        let err = |e: crate::DataError| hangar_common::Error::Config(e.to_string());
        self.ctx.meta.drop_partition(p as u8).map_err(err)?;
        // Block references and files of the block partition p.
        for hash in self.ctx.blocks.files_of_partition(p as u8) {
            self.ctx.blocks.offload(&hash).await.map_err(err)?;
            self.ctx.meta.unreferenced.remove(hash.0).map_err(sled_err)?;
        }
        self.ctx.meta.db.flush().map_err(sled_err)?;
        debug_assert!(partition_of(Table::BlockRef, &[p as u8]) == p);
        self.dropped += 1;
        tracing::info!(partition = p, "dropped a partition this node no longer holds");
        Ok(())
    }
}

impl Worker for Offload {
    fn name(&self) -> String {
        "offload".into()
    }

    async fn step(&mut self) -> Result<Step, hangar_common::Error> {
        if !self.observe()? {
            return Ok(Step::Idle(Duration::from_secs(5)));
        }
        let due = self.state.scan_prefix(b"lost/").find_map(|r| {
            let (k, v) = r.ok()?;
            let at = <[u8; 8]>::try_from(v.as_ref()).map(u64::from_be_bytes).ok()?;
            (now_ms().saturating_sub(at) >= self.delay.as_millis() as u64).then(|| k.get(5).copied()).flatten()
        });
        let Some(p) = due else { return Ok(Step::Idle(Duration::from_secs(5))) };
        let view = self.ctx.cluster.view();
        if !self.ctx.holds(&view, p as usize) {
            self.drop_partition(p as usize).await?;
            self.forget_held(p as usize)?;
        }
        self.state.remove(lost_key(p as usize)).map_err(sled_err)?;
        Ok(Step::Busy)
    }

    fn progress(&self) -> (String, u64) {
        let waiting = self.state.scan_prefix(b"lost/").count() as u64;
        (format!("{} partitions dropped", self.dropped), waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_seen_held_stay_recorded_and_old_views_decide_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = sled::open(dir.path()).unwrap().open_tree("offload_state").unwrap();
        assert!(!decides_on(&state, 0).unwrap(), "no layout yet");
        let mut v1 = vec![false; 4];
        v1[0] = true;
        let mut v2 = vec![false; 4];
        v2[1] = true;
        note_held(&state, 1, &v1).unwrap();
        note_held(&state, 2, &v2).unwrap();
        // A brief version's partitions stay recorded once a later one no longer has them.
        assert_eq!(state.get(HELD).unwrap().unwrap().as_ref(), &[1, 1, 0, 0]);
        assert_eq!(seen_version(&state).unwrap(), 2);
        // An older view (version 1 from an old file) is noted but decides nothing.
        note_held(&state, 1, &v1).unwrap();
        assert_eq!(seen_version(&state).unwrap(), 2);
        assert!(!decides_on(&state, 1).unwrap());
        assert!(decides_on(&state, 2).unwrap() && decides_on(&state, 3).unwrap());
    }
}
