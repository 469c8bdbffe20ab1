//! Random ids and clocks.

use rand::RngCore;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// This machine's host name (empty when it cannot be read).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// 16 random bytes: bucket ids, version ids, upload ids.
pub fn random_id() -> Vec<u8> {
    let mut b = vec![0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b
}

pub fn random_u64() -> u64 {
    rand::rng().next_u64()
}

/// A random string of `len` characters from `alphabet`.
pub fn random_string(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..len).map(|_| alphabet[(rng.next_u32() as usize) % alphabet.len()] as char).collect()
}

/// A new access key id, `GK` + 24 hex digits as in Garage.
pub fn new_access_key_id() -> String {
    format!("GK{}", random_string(24, b"0123456789abcdef"))
}

/// A new secret access key: 64 hex digits.
pub fn new_secret_key() -> String {
    random_string(64, b"0123456789abcdef")
}

/// A write timestamp in microseconds since the Unix epoch, strictly increasing within this
/// process, so two writes one after the other (PUT then DELETE) always order correctly.
pub fn next_timestamp() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_strictly_increase() {
        let mut last = 0;
        for _ in 0..10_000 {
            let t = super::next_timestamp();
            assert!(t > last);
            last = t;
        }
    }
}
