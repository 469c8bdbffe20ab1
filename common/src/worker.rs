//! Background workers: one trait, one runner. A worker does its work in bounded steps; the
//! runner calls `step` again at once while there is work, sleeps when the worker says it is
//! idle, backs off after errors, and stops only between steps, so a shutdown never cuts a
//! write in half. Each worker's state, progress, queue length and last error are kept in a
//! registry (reported in heartbeats, `hangar status` and the metrics).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hangar_proto::control::WorkerStatus;
use tokio::sync::watch;

use crate::telemetry::metrics;
use crate::telemetry::metrics::WorkerLabel;

/// What one step did.
pub enum Step {
    /// There is more to do right away.
    Busy,
    /// Nothing to do; call again after this long (or earlier when woken).
    Idle(Duration),
}

pub trait Worker: Send + 'static {
    fn name(&self) -> String;
    /// One bounded unit of work. The runner never cancels it once started.
    fn step(&mut self) -> impl Future<Output = Result<Step, crate::Error>> + Send;
    /// Progress in the worker's own words, and how many items wait.
    fn progress(&self) -> (String, u64) {
        (String::new(), 0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Busy,
    Idle,
    Paused,
    Failed,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Busy => "busy",
            State::Idle => "idle",
            State::Paused => "paused",
            State::Failed => "failed",
        }
    }

    fn gauge(self) -> i64 {
        match self {
            State::Idle => 0,
            State::Busy => 1,
            State::Paused => 2,
            State::Failed => 3,
        }
    }
}

#[derive(Clone, Debug)]
struct Info {
    state: State,
    progress: String,
    queue: u64,
    last_error: String,
    errors: u64,
    paused: bool,
}

/// The workers of one process, their status, and the shutdown signal they obey.
#[derive(Clone)]
pub struct Workers {
    infos: Arc<Mutex<BTreeMap<String, Info>>>,
    /// Wakes workers early (e.g. when new work was queued).
    wake: Arc<tokio::sync::Notify>,
    stop: watch::Sender<bool>,
    handles: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Default for Workers {
    fn default() -> Self {
        Self {
            infos: Default::default(),
            wake: Default::default(),
            stop: watch::channel(false).0,
            handles: Default::default(),
        }
    }
}

/// Longest pause after repeated errors.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl Workers {
    fn update(&self, name: &str, f: impl FnOnce(&mut Info)) {
        let mut infos = self.infos.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = infos.get_mut(name) {
            f(i);
            let label = WorkerLabel { worker: name.to_string() };
            metrics().worker_state.get_or_create(&label).set(i.state.gauge());
            metrics().worker_queue_length.get_or_create(&label).set(i.queue as i64);
        }
    }

    /// Runs `worker` until `shutdown`.
    pub fn spawn<W: Worker>(&self, mut worker: W) {
        let name = worker.name();
        self.infos.lock().unwrap_or_else(|p| p.into_inner()).insert(
            name.clone(),
            Info {
                state: State::Idle,
                progress: String::new(),
                queue: 0,
                last_error: String::new(),
                errors: 0,
                paused: false,
            },
        );
        let this = self.clone();
        let mut stop = self.stop.subscribe();
        let handle = tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            while !*stop.borrow() {
                let paused = this.infos.lock().map(|m| m.get(&name).is_some_and(|i| i.paused)).unwrap_or(false);
                if paused {
                    this.update(&name, |i| i.state = State::Paused);
                    this.sleep(&mut stop, Duration::from_secs(1)).await;
                    continue;
                }
                let span = tracing::debug_span!("worker", worker = %name);
                let result = tracing::Instrument::instrument(worker.step(), span).await;
                let (progress, queue) = worker.progress();
                match result {
                    Ok(Step::Busy) => {
                        backoff = Duration::from_secs(1);
                        this.update(&name, |i| {
                            i.state = State::Busy;
                            (i.progress, i.queue) = (progress, queue);
                        });
                        tokio::task::yield_now().await;
                    }
                    Ok(Step::Idle(d)) => {
                        backoff = Duration::from_secs(1);
                        this.update(&name, |i| {
                            i.state = State::Idle;
                            (i.progress, i.queue) = (progress, queue);
                        });
                        this.sleep(&mut stop, d).await;
                    }
                    Err(e) => {
                        tracing::warn!(worker = %name, error = %e, "background worker failed; retrying");
                        metrics().worker_errors.get_or_create(&WorkerLabel { worker: name.clone() }).inc();
                        this.update(&name, |i| {
                            i.state = State::Failed;
                            i.errors += 1;
                            i.last_error = e.to_string();
                            (i.progress, i.queue) = (progress, queue);
                        });
                        this.sleep(&mut stop, backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        });
        self.handles.lock().unwrap_or_else(|p| p.into_inner()).push(handle);
    }

    /// Sleeps `d`, or less when woken or stopped.
    async fn sleep(&self, stop: &mut watch::Receiver<bool>, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.wake.notified() => {}
            _ = stop.changed() => {}
        }
    }

    /// Wakes every idle worker (new work was queued).
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    pub fn set_paused(&self, name: &str, paused: bool) -> bool {
        let mut infos = self.infos.lock().unwrap_or_else(|p| p.into_inner());
        match infos.get_mut(name) {
            Some(i) => {
                i.paused = paused;
                true
            }
            None => false,
        }
    }

    /// Every worker's status, by name.
    pub fn status(&self) -> Vec<WorkerStatus> {
        let infos = self.infos.lock().unwrap_or_else(|p| p.into_inner());
        infos
            .iter()
            .map(|(name, i)| WorkerStatus {
                name: name.clone(),
                state: i.state.as_str().into(),
                progress: i.progress.clone(),
                queue_length: i.queue,
                last_error: i.last_error.clone(),
                errors: i.errors,
            })
            .collect()
    }

    /// Asks every worker to stop after its current step and waits (at most `limit`).
    pub async fn shutdown(&self, limit: Duration) {
        let _ = self.stop.send(true);
        let handles: Vec<_> = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|p| p.into_inner()));
        if tokio::time::timeout(limit, futures::future::join_all(handles)).await.is_err() {
            tracing::warn!("background workers still busy after {limit:?}; stopping anyway");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counter {
        done: Arc<AtomicUsize>,
        fail_first: bool,
    }

    impl Worker for Counter {
        fn name(&self) -> String {
            "counter".into()
        }
        async fn step(&mut self) -> Result<Step, crate::Error> {
            if self.fail_first {
                self.fail_first = false;
                return Err(crate::Error::Invalid("first step fails".into()));
            }
            let n = self.done.fetch_add(1, Ordering::SeqCst);
            Ok(if n < 5 { Step::Busy } else { Step::Idle(Duration::from_secs(3600)) })
        }
        fn progress(&self) -> (String, u64) {
            (format!("{} done", self.done.load(Ordering::SeqCst)), 0)
        }
    }

    #[tokio::test]
    async fn runs_until_idle_reports_errors_and_stops_cleanly() {
        let w = Workers::default();
        let done = Arc::new(AtomicUsize::new(0));
        w.spawn(Counter { done: done.clone(), fail_first: true });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(done.load(Ordering::SeqCst), 6, "busy steps run back to back after the retry");
        let st = w.status();
        assert_eq!(st[0].state, "idle");
        assert_eq!(st[0].errors, 1);
        assert!(st[0].last_error.contains("first step fails"));
        assert!(w.set_paused("counter", true));
        w.wake();
        tokio::time::sleep(Duration::from_millis(100)).await;
        w.shutdown(Duration::from_secs(5)).await;
    }
}
