//! Whether this frontend can serve: it has a layout, and for every partition a read
//! quorum and a write quorum of each live version's replicas answer. Reported on
//! `/health` (and `/ready`), so a load balancer sends S3 traffic only to frontends that
//! can serve it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use hangar_common::admin_http::set_problem;
use hangar_common::cluster::{Cluster, NodeRef, PARTITIONS, View, quorum};
use hangar_proto::control::GetLayoutRequest;

/// How often every data node is asked.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How long a data node may take to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const NAME: &str = "frontend";

/// Probes the data nodes for as long as the task runs and keeps `/health` true.
pub fn spawn(cluster: Cluster) -> tokio::task::JoinHandle<()> {
    set_problem(NAME, Some("frontend: no layout received yet".into()));
    tokio::spawn(async move {
        loop {
            let view = cluster.view();
            let problem = if view.version() == 0 {
                Some("frontend: no layout received yet".to_string())
            } else {
                let up = reachable(&cluster, view.all_nodes()).await;
                hangar_common::telemetry::metrics().cluster_health(&view, &up);
                missing_quorum(&view, &up)
            };
            set_problem(NAME, problem);
            tokio::time::sleep(PROBE_EVERY).await;
        }
    })
}

/// The data nodes that answer a layout request in time.
async fn reachable(cluster: &Cluster, nodes: &[NodeRef]) -> BTreeSet<Arc<str>> {
    let asks = nodes.iter().map(|n| async move {
        let mut c = cluster.layout(n).ok()?;
        let answered = tokio::time::timeout(PROBE_TIMEOUT, c.get_layout(GetLayoutRequest {})).await;
        // Any answer counts, a data node too old to serve the layout (Unimplemented) too.
        let up = match answered {
            Ok(Ok(_)) => true,
            Ok(Err(status)) => status.code() == tonic::Code::Unimplemented,
            Err(_) => false,
        };
        up.then(|| n.id.clone())
    });
    futures::future::join_all(asks).await.into_iter().flatten().collect()
}

/// The first partition without a read or a write quorum among `up`, as one line.
fn missing_quorum(view: &View, up: &BTreeSet<Arc<str>>) -> Option<String> {
    let count = |set: &[NodeRef]| set.iter().filter(|n| up.contains(&n.id)).count();
    for p in 0..PARTITIONS {
        let mut sets = view.write_sets(p).unwrap_or_default();
        sets.push(view.read_set(p).unwrap_or_default());
        for set in sets {
            let n = count(&set);
            if n < quorum(set.len()) {
                return Some(format!(
                    "frontend: partition {p}: {n} of its {} replicas answer, a quorum needs {} ({} of {} data nodes answer)",
                    set.len(),
                    quorum(set.len()),
                    up.len(),
                    view.all_nodes().len()
                ));
            }
        }
    }
    None
}
