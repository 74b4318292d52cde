//! Layer checksums, method `crc64nvme-extents-v1`: CRC-64/NVME over, for
//! each allocated extent in order, its offset and length (little-endian
//! u64) followed by its data.

use super::Checksum;
use super::aligned::AlignedBuf;
use super::extent::ExtentSet;
use super::file::LayerFile;
use super::fsutil::Result;

/// The method name stored with every checksum we compute.
pub(super) const METHOD: &str = "crc64nvme-extents-v1";

/// Computes the checksum of `file` over the extents in `extents`.
pub(super) fn compute(file: &LayerFile, extents: &ExtentSet) -> Result<Checksum> {
    let mut digest = LayerDigest::default();
    let mut buf: Option<AlignedBuf> = None;
    for (start, end) in extents.iter() {
        digest.extent(start, end - start);
        let buf = buf.get_or_insert_with(|| AlignedBuf::new(usize::MAX));
        let cap = buf.as_slice().len() as u64;
        let mut off = start;
        while off < end {
            let n = (end - off).min(cap) as usize;
            let chunk = &mut buf.as_mut_slice()[..n];
            file.read_at(off, chunk)?;
            digest.data(chunk);
            off += n as u64;
        }
    }
    Ok(digest.finish())
}

/// A layer's checksum computed from its data as it streams past, in order
/// (a rebuild's copy hashes what it sends instead of reading the layer a
/// second time). The same value [`compute`] gives over the same extents.
#[derive(Default)]
pub struct LayerDigest {
    digest: crc64fast_nvme::Digest,
}

impl LayerDigest {
    /// Starts the next allocated extent (extents in ascending order).
    pub fn extent(&mut self, offset: u64, len: u64) {
        self.digest.write(&offset.to_le_bytes());
        self.digest.write(&len.to_le_bytes());
    }

    /// The extent's data, its bytes in order, in as many pieces as wanted.
    pub fn data(&mut self, bytes: &[u8]) {
        self.digest.write(bytes);
    }

    /// The checksum of everything written.
    pub fn finish(&self) -> Checksum {
        Checksum {
            method: METHOD.to_string(),
            value: format!("{:016x}", self.digest.sum64()),
        }
    }
}
