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
        let follow = async {
            let mut listing = hangar_discovery::follow(backend.clone());
            while listing.changed().await.is_ok() {
                let current = listing.borrow_and_update().clone();
                if let Some(l) = current {
                    members.set_listing(backend.name(), &l);
                }
            }
        };
        // Polled beside the listing, so a slow backend never delays it; both stop together.
        let report = async {
            let mut every = tokio::time::interval(REPORT_EVERY);
            loop {
                every.tick().await;
                for (node, last_seen, healthy) in members.listed() {
                    let reported = tokio::time::timeout(REPORT_EVERY, backend.report(&node, healthy, last_seen)).await;
                    if let Ok(Err(e)) = reported {
                        tracing::debug!(node = %node.id, error = %e, "cannot report a node's health to discovery");
                    }
                }
            }
        };
        tokio::select! {
            _ = follow => {}
            _ = report => {}
        }
    })
}
