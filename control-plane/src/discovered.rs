//! The control plane's side of discovery: it follows the backend's listing into the
//! member list, writes each listed node's health where the backend shows it, and
//! announces itself so nodes can find it.

use std::sync::Arc;
use std::time::Duration;

use hangar_discovery::Backend;

use crate::membership::Members;

/// How often listed nodes' health is written back to the backend.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Follows `backend` into `members` for as long as the task runs.
pub fn spawn(backend: Arc<dyn Backend>, members: Arc<Members>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut listing = hangar_discovery::follow(backend.clone());
        let mut report = tokio::time::interval(REPORT_EVERY);
        loop {
            tokio::select! {
                changed = listing.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let current = listing.borrow_and_update().clone();
                    if let Some(l) = current {
                        members.set_listing(backend.name(), &l);
                    }
                }
                _ = report.tick() => {
                    for (node, last_seen, healthy) in members.listed() {
                        if let Err(e) = backend.report(&node, healthy, last_seen).await {
                            tracing::debug!(node = %node.id, error = %e, "cannot report a node's health to discovery");
                        }
                    }
                }
            }
        }
    })
}
