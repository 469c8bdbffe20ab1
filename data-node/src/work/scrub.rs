//! The scrub: reads every block file and checks it against its blake2b id. A corrupt file
//! is moved to `corrupt/` and the block queued for resync, which fetches a good copy from
//! another replica. It runs every `scrub-interval` (default 30 days) and on `hangar repair
//! scrub start`; it rests `scrub-tranquility` times as long as each step took, so client
//! traffic keeps most of the disk. Its position and counts are kept in the database: a
//! restart resumes where it stopped. Pause, resume and cancel are commands too.

use std::time::{Duration, Instant};

use hangar_common::hash::BlockHash;
use hangar_common::ids::now_ms;
use hangar_common::worker::{Step, Worker};

use super::Ctx;
use super::release::sled_err;
use super::vars::Vars;
use crate::DataError;
use crate::block_store::Verify;

/// Blocks read per step.
const PER_STEP: usize = 16;

const STATUS: &[u8] = b"status";
const CURSOR: &[u8] = b"cursor";
const CHECKED: &[u8] = b"checked";
const CORRUPT: &[u8] = b"corrupt";
const LAST_DONE: &[u8] = b"last_done";
const RUNNING: &[u8] = b"running";
const PAUSED: &[u8] = b"paused";

pub struct Scrub {
    pub ctx: Ctx,
    pub vars: Vars,
    pub state: sled::Tree,
    /// `disable_scrub`: no scrub on schedule, only on command.
    pub scheduled: bool,
}

fn num(t: &sled::Tree, k: &[u8]) -> u64 {
    t.get(k).ok().flatten().and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok()).map(u64::from_be_bytes).unwrap_or(0)
}

/// What an operator can ask of the scrub.
#[derive(Clone, Copy, Debug)]
pub enum Command {
    Start,
    Pause,
    Resume,
    Cancel,
}

/// Carries out `cmd`; returns what happened, in words.
pub fn command(state: &sled::Tree, cmd: Command) -> Result<String, hangar_common::Error> {
    let status = state.get(STATUS).map_err(sled_err)?;
    let msg = match (cmd, status.as_deref()) {
        (Command::Start, Some(RUNNING)) => "scrub already running".to_string(),
        (Command::Start, _) => {
            state.insert(STATUS, RUNNING).map_err(sled_err)?;
            state.remove(CURSOR).map_err(sled_err)?;
            state.insert(CHECKED, &0u64.to_be_bytes()).map_err(sled_err)?;
            state.insert(CORRUPT, &0u64.to_be_bytes()).map_err(sled_err)?;
            "scrub started".to_string()
        }
        (Command::Pause, Some(RUNNING)) => {
            state.insert(STATUS, PAUSED).map_err(sled_err)?;
            "scrub paused".to_string()
        }
        (Command::Resume, Some(PAUSED)) => {
            state.insert(STATUS, RUNNING).map_err(sled_err)?;
            "scrub resumed".to_string()
        }
        (Command::Cancel, Some(RUNNING | PAUSED)) => {
            // The next scheduled scrub comes a full interval after this one.
            state.remove(STATUS).map_err(sled_err)?;
            state.remove(CURSOR).map_err(sled_err)?;
            state.insert(LAST_DONE, &now_ms().to_be_bytes()).map_err(sled_err)?;
            "scrub cancelled".to_string()
        }
        (_, Some(PAUSED)) => "scrub is paused (resume or cancel it)".to_string(),
        (_, Some(RUNNING)) => "scrub is running (pause or cancel it)".to_string(),
        _ => "no scrub is running (start one)".to_string(),
    };
    state.flush().map_err(sled_err)?;
    Ok(msg)
}

impl Scrub {
    fn add(&self, k: &[u8], n: u64) -> Result<(), hangar_common::Error> {
        let v = num(&self.state, k) + n;
        self.state.insert(k, &v.to_be_bytes()).map_err(sled_err)?;
        Ok(())
    }
}

impl Worker for Scrub {
    fn name(&self) -> String {
        "scrub".into()
    }

    async fn step(&mut self) -> Result<Step, hangar_common::Error> {
        let started = Instant::now();
        match self.state.get(STATUS).map_err(sled_err)?.as_deref() {
            Some(RUNNING) => {}
            Some(_) => return Ok(Step::Idle(Duration::from_secs(5))),
            None if !self.scheduled => return Ok(Step::Idle(Duration::from_secs(60))),
            None => {
                // On schedule: a node's first scrub comes one interval after it started.
                let last = num(&self.state, LAST_DONE);
                if last == 0 {
                    self.state.insert(LAST_DONE, &now_ms().to_be_bytes()).map_err(sled_err)?;
                    return Ok(Step::Idle(Duration::from_secs(60)));
                }
                let due = last + self.vars.scrub_interval().as_millis() as u64;
                if now_ms() < due {
                    return Ok(Step::Idle(Duration::from_millis(due - now_ms()).min(Duration::from_secs(60))));
                }
                command(&self.state, Command::Start)?;
            }
        }
        let cursor = self.state.get(CURSOR).map_err(sled_err)?.and_then(|c| BlockHash::from_slice(&c));
        let batch = self.ctx.blocks.files_after(cursor.as_ref(), PER_STEP);
        if batch.is_empty() {
            let (checked, corrupt) = (num(&self.state, CHECKED), num(&self.state, CORRUPT));
            self.state.remove(STATUS).map_err(sled_err)?;
            self.state.remove(CURSOR).map_err(sled_err)?;
            self.state.insert(LAST_DONE, &now_ms().to_be_bytes()).map_err(sled_err)?;
            self.state.flush().map_err(sled_err)?;
            tracing::info!(checked, corrupt, "scrub finished");
            return Ok(Step::Busy);
        }
        let (mut checked, mut corrupt) = (0, 0);
        for hash in &batch {
            match self.ctx.blocks.read_checked(hash, Verify::Hash).await {
                Ok(_) => checked += 1,
                // Moved aside and queued for resync by the read.
                Err(DataError::Corrupt(_)) => {
                    checked += 1;
                    corrupt += 1;
                }
                // Deleted meanwhile.
                Err(DataError::BlockNotFound(_)) => {}
                // An unreadable file (a bad sector) is what the scrub is for: set aside and
                // fetched again like a corrupt one.
                Err(e) => {
                    tracing::error!(block = %hash, error = %e, "cannot read a block file; moving it aside");
                    self.ctx.blocks.quarantine(hash).await;
                    checked += 1;
                    corrupt += 1;
                }
            }
        }
        self.add(CHECKED, checked)?;
        self.add(CORRUPT, corrupt)?;
        if let Some(last) = batch.last() {
            self.state.insert(CURSOR, &last.0[..]).map_err(sled_err)?;
        }
        let t = self.vars.scrub_tranquility();
        Ok(if t == 0 { Step::Busy } else { Step::Idle(started.elapsed() * t) })
    }

    fn progress(&self) -> (String, u64) {
        let (checked, corrupt) = (num(&self.state, CHECKED), num(&self.state, CORRUPT));
        let status = self.state.get(STATUS).ok().flatten();
        let text = match status.as_deref() {
            Some(s) => {
                let pct = self.state.get(CURSOR).ok().flatten().and_then(|c| c.first().copied()).unwrap_or(0) as u64
                    * 100
                    / 256;
                let word = if s == PAUSED { "paused" } else { "running" };
                format!("{word}: {pct}%, {checked} blocks checked, {corrupt} corrupt")
            }
            None => {
                let last = num(&self.state, LAST_DONE);
                let next = last + self.vars.scrub_interval().as_millis() as u64;
                let hours = |ms: u64| ms / 3_600_000;
                let when = if self.scheduled {
                    format!("next in {}h", hours(next.saturating_sub(now_ms())))
                } else {
                    "no scrub on schedule (disable_scrub)".to_string()
                };
                format!(
                    "last finished {}h ago ({checked} blocks checked, {corrupt} corrupt), {when}",
                    hours(now_ms().saturating_sub(last))
                )
            }
        };
        (text, 0)
    }
}
