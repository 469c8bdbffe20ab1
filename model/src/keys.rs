//! Table keys built from segments, so that no user-chosen string can reach into another
//! entry's key space.
//!
//! Fixed-size segments (ids, hashes, numbers) are written as they are. A string segment is
//! escaped and terminated: every 0x00 byte becomes 0x00 0xFF and the string ends with
//! 0x00 0x01. No escaped string contains the terminator, so a string always ends where it
//! says, whatever bytes it holds. The encoding keeps byte order (keys sort as their
//! segments do), and an escaped string without its terminator is a prefix of the encoding
//! of every string that starts with it, which is what prefix listings scan.

/// Builds one key.
#[derive(Default)]
pub struct KeyBuf(Vec<u8>);

const ESCAPE: u8 = 0x00;
const ESCAPED_NUL: u8 = 0xff;
const END: u8 = 0x01;

impl KeyBuf {
    pub fn new() -> Self {
        Self(Vec::with_capacity(64))
    }

    /// A segment whose length the table fixes (an id, a hash).
    pub fn fixed(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }

    pub fn u32(mut self, n: u32) -> Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }

    pub fn u64(mut self, n: u64) -> Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }

    /// A string segment, escaped and terminated.
    pub fn str(mut self, s: &str) -> Self {
        escape_into(&mut self.0, s.as_bytes());
        self.0.extend_from_slice(&[ESCAPE, END]);
        self
    }

    /// A string segment without its terminator: the prefix of every key whose string
    /// segment starts with `s`. Only as the last segment.
    pub fn str_prefix(mut self, s: &str) -> Vec<u8> {
        escape_into(&mut self.0, s.as_bytes());
        self.0
    }

    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

fn escape_into(out: &mut Vec<u8>, b: &[u8]) {
    for &c in b {
        out.push(c);
        if c == ESCAPE {
            out.push(ESCAPED_NUL);
        }
    }
}

/// Reads a key back, segment by segment. Every method returns None on a malformed key.
pub struct KeyReader<'a> {
    rest: &'a [u8],
}

impl<'a> KeyReader<'a> {
    pub fn new(key: &'a [u8]) -> Self {
        Self { rest: key }
    }

    pub fn fixed(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (a, b) = self.rest.split_at(n);
        self.rest = b;
        Some(a)
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.fixed(4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes)
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.fixed(8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
    }

    /// The bytes of a string segment (unescaped).
    pub fn bytes(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.rest.len() {
            let c = self.rest[i];
            if c == ESCAPE {
                match self.rest.get(i + 1) {
                    Some(&ESCAPED_NUL) => out.push(ESCAPE),
                    Some(&END) => {
                        self.rest = &self.rest[i + 2..];
                        return Some(out);
                    }
                    _ => return None,
                }
                i += 2;
            } else {
                out.push(c);
                i += 1;
            }
        }
        None
    }

    pub fn str(&mut self) -> Option<String> {
        self.bytes().and_then(|b| String::from_utf8(b).ok())
    }

    /// True when the whole key was read.
    pub fn done(&self) -> bool {
        self.rest.is_empty()
    }
}

/// The smallest key greater than `key`.
pub fn successor(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

/// The smallest key greater than every key starting with `prefix` (empty: unbounded).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"ab"), b"ac".to_vec());
        assert_eq!(prefix_end(&[1, 0xff]), vec![2]);
        assert_eq!(prefix_end(&[0xff, 0xff]), Vec::<u8>::new());
    }

    #[test]
    fn the_injection_of_issue_six_cannot_happen() {
        // A key `x\0U` with upload V must not equal key `x` with upload `U\0V`.
        let a = KeyBuf::new().fixed(b"B").str("x\0U").str("V").finish();
        let b = KeyBuf::new().fixed(b"B").str("x").str("U\0V").finish();
        assert_ne!(a, b);
        assert!(!a.starts_with(&KeyBuf::new().fixed(b"B").str("x").finish()));
    }

    fn cases() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec(any::<String>(), 1..4)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)))]

        /// Keys read back exactly, and distinct segment lists give distinct keys.
        #[test]
        fn round_trip_and_injective(a in cases(), b in cases()) {
            let enc = |v: &[String]| v.iter().fold(KeyBuf::new(), |k, s| k.str(s)).finish();
            let (ka, kb) = (enc(&a), enc(&b));
            let mut r = KeyReader::new(&ka);
            for s in &a {
                let got = r.str();
                prop_assert_eq!(got.as_ref(), Some(s));
            }
            prop_assert!(r.done());
            prop_assert_eq!(ka == kb, a == b);
        }

        /// Keys sort as their segments do.
        #[test]
        fn order_is_kept(a in cases(), b in cases()) {
            let enc = |v: &[String]| v.iter().fold(KeyBuf::new(), |k, s| k.str(s)).finish();
            let seg = |v: &[String]| v.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
            prop_assert_eq!(enc(&a).cmp(&enc(&b)), seg(&a).cmp(&seg(&b)));
        }

        /// An escaped prefix selects exactly the strings that start with it.
        #[test]
        fn prefixes_select_what_they_should(p in any::<String>(), s in any::<String>(), id in any::<[u8; 4]>()) {
            let key = KeyBuf::new().fixed(&id).str(&s).finish();
            let prefix = KeyBuf::new().fixed(&id).str_prefix(&p);
            prop_assert_eq!(key.starts_with(&prefix), s.as_bytes().starts_with(p.as_bytes()));
            if key.starts_with(&prefix) {
                prop_assert!(key < prefix_end(&prefix) || prefix_end(&prefix).is_empty());
            }
        }

        /// Malformed keys never panic the reader.
        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = KeyReader::new(&raw);
            let _ = r.fixed(3);
            let _ = r.str();
            let _ = r.u32();
            let _ = r.bytes();
        }
    }
}
