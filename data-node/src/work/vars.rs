//! Worker variables: settings an operator changes on a running node with `hangar worker
//! set` (as in Garage). The configuration gives the defaults; a value set is kept in the
//! node's database, so it survives restarts.

use std::time::Duration;

use hangar_common::config::Config;

use super::release::sled_err;

/// Every variable: name, what it means.
pub const VARIABLES: &[(&str, &str)] = &[
    ("scrub-tranquility", "the scrub rests this many times as long as each step took (0: no rest)"),
    ("scrub-interval", "time between two scrubs (seconds, or with a unit: 30d, 12h, 90m)"),
    ("resync-tranquility", "the block resync rests this many times as long as each step took"),
    ("resync-worker-count", "blocks the resync fetches at once (1 to 8)"),
];

#[derive(Clone)]
pub struct Vars {
    tree: sled::Tree,
    defaults: [u64; 4],
}

/// Parses a duration: plain seconds, or a number with s, m, h or d.
pub fn parse_duration(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, unit) = match v.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&v[..i], c),
        _ => (v, 's'),
    };
    let n: u64 = num.trim().parse().ok()?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn index(name: &str) -> Option<usize> {
    VARIABLES.iter().position(|(n, _)| *n == name)
}

impl Vars {
    pub fn open(db: &sled::Db, cfg: &Config) -> Result<Self, crate::DataError> {
        Ok(Self {
            tree: db.open_tree("worker_vars")?,
            defaults: [
                cfg.scrub_tranquility as u64,
                cfg.scrub_interval_secs,
                cfg.resync_tranquility as u64,
                cfg.resync_worker_count.clamp(1, 8) as u64,
            ],
        })
    }

    fn get(&self, name: &str) -> u64 {
        let Some(i) = index(name) else { return 0 };
        self.tree
            .get(name)
            .ok()
            .flatten()
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(self.defaults[i])
    }

    pub fn scrub_tranquility(&self) -> u32 {
        self.get("scrub-tranquility") as u32
    }

    pub fn scrub_interval(&self) -> Duration {
        Duration::from_secs(self.get("scrub-interval"))
    }

    pub fn resync_tranquility(&self) -> u32 {
        self.get("resync-tranquility") as u32
    }

    pub fn resync_worker_count(&self) -> usize {
        self.get("resync-worker-count").clamp(1, 8) as usize
    }

    /// Sets a variable after checking its value; the error says what is wrong.
    pub fn set(&self, name: &str, value: &str) -> Result<(), String> {
        let known = || VARIABLES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
        index(name).ok_or_else(|| format!("unknown worker variable `{name}` (known: {})", known()))?;
        let v = match name {
            "scrub-interval" => parse_duration(value)
                .filter(|s| *s > 0)
                .ok_or_else(|| format!("scrub-interval: `{value}` is not a duration such as 30d, 12h or 3600"))?,
            "resync-worker-count" => value
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=8).contains(n))
                .ok_or_else(|| format!("resync-worker-count: `{value}` is not a number from 1 to 8"))?,
            _ => value
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= 1000)
                .ok_or_else(|| format!("{name}: `{value}` is not a number from 0 to 1000"))?,
        };
        self.tree.insert(name, &v.to_be_bytes()).map_err(|e| sled_err(e).to_string())?;
        self.tree.flush().map_err(|e| sled_err(e).to_string())?;
        Ok(())
    }

    /// Every variable and its value, as text.
    pub fn list(&self) -> Vec<(String, String)> {
        VARIABLES
            .iter()
            .map(|(name, _)| {
                let v = self.get(name);
                let shown = if *name == "scrub-interval" { format!("{}s", v) } else { v.to_string() };
                (name.to_string(), shown)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("30d"), Some(30 * 86400));
        assert_eq!(parse_duration("90m"), Some(5400));
        assert_eq!(parse_duration("3600"), Some(3600));
        assert_eq!(parse_duration("3x"), None);
        assert_eq!(parse_duration(""), None);
    }
}
