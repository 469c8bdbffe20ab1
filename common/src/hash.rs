//! Block ids: blake2b-256 of a block's bytes.

use blake2::Digest;
use blake2::digest::consts::U32;

type Blake2b256 = blake2::Blake2b<U32>;

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

/// Incremental blake2b-256, for blocks that arrive in pieces.
#[derive(Default)]
pub struct Hasher(Blake2b256);

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> BlockHash {
        BlockHash(self.0.finalize().into())
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
    fn known_vector() {
        // blake2b-256("") from the BLAKE2 reference implementation.
        assert_eq!(BlockHash::of(b"").to_hex(), "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8");
    }
}
