//! Quorum calls: one call per node of one or several replica sets, in parallel, returning
//! once every set has a quorum of successful answers. Calls still running go on in the
//! background, so every replica still gets a write the quorum already acknowledged; their
//! answers arrive on a channel (read repair uses them to find replicas that were behind).

use std::collections::BTreeSet;
use std::future::Future;

use tracing::Instrument;

use crate::cluster::{NodeRef, quorum};
use crate::{Error, Result};

/// Answers that arrive after a quorum call returned.
pub type LateAnswers<T> = tokio::sync::mpsc::Receiver<(NodeRef, Result<T>)>;

/// Runs `call` once on every node of `sets`; returns the successful answers once each set
/// has `quorum(set.len())` of them, or fails when some set can no longer get there.
pub async fn quorum_sets<T, F, Fut>(sets: &[Vec<NodeRef>], call: F) -> Result<(Vec<(NodeRef, T)>, LateAnswers<T>)>
where
    T: Send + 'static,
    F: Fn(NodeRef) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    // The calls are children of this span, so a trace shows what the quorum waited for.
    let span = tracing::debug_span!("quorum", otel.name = "quorum wait", sets = sets.len());
    quorum_sets_in(sets, call).instrument(span).await
}

async fn quorum_sets_in<T, F, Fut>(sets: &[Vec<NodeRef>], call: F) -> Result<(Vec<(NodeRef, T)>, LateAnswers<T>)>
where
    T: Send + 'static,
    F: Fn(NodeRef) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    let nodes: Vec<NodeRef> = sets.iter().flatten().cloned().collect::<BTreeSet<_>>().into_iter().collect();
    if sets.is_empty() || sets.iter().any(|s| s.is_empty()) {
        return Err(Error::Unavailable("no replicas: the layout has none for this partition".into()));
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(nodes.len().max(1));
    for n in &nodes {
        let fut = call(n.clone());
        let (tx, n) = (tx.clone(), n.clone());
        tokio::spawn(
            async move {
                let r = fut.await;
                let _ = tx.send((n, r)).await;
            }
            .in_current_span(),
        );
    }
    drop(tx);
    let reached = |ok: &[(NodeRef, T)]| {
        sets.iter().all(|s| s.iter().filter(|n| ok.iter().any(|(m, _)| m == *n)).count() >= quorum(s.len()))
    };
    let hopeless = |failed: &[NodeRef]| {
        sets.iter().any(|s| s.len() - s.iter().filter(|n| failed.contains(n)).count() < quorum(s.len()))
    };
    let (mut ok, mut failed, mut why) = (Vec::new(), Vec::new(), Vec::new());
    // A full disk is worth telling the client about: it will not pass by retrying soon.
    let mut full = None;
    while let Some((node, r)) = rx.recv().await {
        match r {
            Ok(v) => {
                ok.push((node, v));
                if reached(&ok) {
                    return Ok((ok, rx));
                }
            }
            Err(e) => {
                tracing::debug!(node = %node.id, error = %e, "replica call failed");
                // A data node that knows a newer layout: the caller retries with it.
                if matches!(e, Error::StaleLayout(_)) {
                    return Err(e);
                }
                why.push(format!("{}: {e}", node.id));
                if let Error::InsufficientStorage(m) = &e {
                    full = Some(format!("{}: {m}", node.id));
                }
                failed.push(node);
                if hopeless(&failed) {
                    break;
                }
            }
        }
    }
    if let Some(m) = full {
        return Err(Error::InsufficientStorage(m));
    }
    Err(Error::Unavailable(format!("quorum not reached ({} answered; {})", ok.len(), why.join("; "))))
}

/// `quorum_sets` over one set, without the late answers.
pub async fn quorum_call<T, F, Fut>(nodes: &[NodeRef], call: F) -> Result<Vec<(NodeRef, T)>>
where
    T: Send + 'static,
    F: Fn(NodeRef) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    quorum_sets(&[nodes.to_vec()], call).await.map(|(ok, _)| ok)
}

/// Runs `call` on every node and waits for all of them.
pub async fn call_all<T, F, Fut>(nodes: &[NodeRef], call: F) -> Vec<(NodeRef, Result<T>)>
where
    F: Fn(NodeRef) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    futures::future::join_all(nodes.iter().map(|n| {
        let fut = call(n.clone());
        let n = n.clone();
        async move { (n, fut.await) }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[&str]) -> Vec<NodeRef> {
        ids.iter().map(|i| NodeRef::new(i, "")).collect()
    }

    #[tokio::test]
    async fn returns_at_quorum_and_fails_when_unreachable() {
        let ok = quorum_call(&nodes(&["n0", "n1", "n2"]), |n| async move {
            if &*n.id == "n0" { Err(Error::Invalid("down".into())) } else { Ok(n.id.to_string()) }
        })
        .await
        .unwrap();
        assert_eq!(ok.len(), 2);
        let err = quorum_call(&nodes(&["n0", "n1", "n2"]), |n| async move {
            if &*n.id == "n2" { Ok(()) } else { Err(Error::Invalid("down".into())) }
        })
        .await
        .err()
        .unwrap();
        assert!(err.to_string().contains("quorum not reached"), "{err}");
    }

    #[tokio::test]
    async fn every_set_needs_its_quorum() {
        // Old set {a,b,c}, new set {a,b,d}: with c and d down neither... a and b suffice for both.
        let sets = vec![nodes(&["a", "b", "c"]), nodes(&["a", "b", "d"])];
        let down = |n: &NodeRef| matches!(&*n.id, "c" | "d");
        let r =
            quorum_sets(&sets, |n| async move { if down(&n) { Err(Error::Invalid("down".into())) } else { Ok(()) } })
                .await;
        assert!(r.is_ok());
        // With b and d down the new set has only a: no quorum there.
        let down = |n: &NodeRef| matches!(&*n.id, "b" | "d");
        let r =
            quorum_sets(&sets, |n| async move { if down(&n) { Err(Error::Invalid("down".into())) } else { Ok(()) } })
                .await;
        assert!(r.is_err());
    }
}
