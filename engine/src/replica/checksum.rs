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
    let mut digest = crc64fast_nvme::Digest::new();
    let mut buf: Option<AlignedBuf> = None;
    for (start, end) in extents.iter() {
        digest.write(&start.to_le_bytes());
        digest.write(&(end - start).to_le_bytes());
        let buf = buf.get_or_insert_with(|| AlignedBuf::new(usize::MAX));
        let cap = buf.as_slice().len() as u64;
        let mut off = start;
        while off < end {
            let n = (end - off).min(cap) as usize;
            let chunk = &mut buf.as_mut_slice()[..n];
            file.read_at(off, chunk)?;
            digest.write(chunk);
            off += n as u64;
        }
    }
    Ok(Checksum {
        method: METHOD.to_string(),
        value: format!("{:016x}", digest.sum64()),
    })
}
