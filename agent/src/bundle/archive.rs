//! The archive: a gzip-compressed tar whose entries all sit under
//! [`ROOT`]`/`, `manifest.json` first. The manifest lists every other file
//! with its size and SHA-256, so a reader can tell a whole bundle from a
//! damaged one ([`Bundle::read`] checks every file).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The directory every entry of the archive is under.
pub const ROOT: &str = "vigil-bundle";
/// The manifest's path (under [`ROOT`]).
pub const MANIFEST: &str = "manifest.json";
/// Version of the layout (`docs/support-bundle.md`).
pub const FORMAT: u32 = 1;
/// Most bytes a bundle may expand to when read (a guard against a file
/// that is not a bundle and decompresses without end).
const MAX_EXPANDED: u64 = 1 << 30;

/// What the manifest says about the bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version ([`FORMAT`]).
    pub format: u32,
    /// vigil version of the coordinating agent.
    pub vigil_version: String,
    /// When the coordinator started collecting (Unix seconds).
    pub created_unix: f64,
    /// How long the collection took, seconds.
    pub duration_secs: f64,
    /// The node whose agent coordinated.
    pub coordinator: String,
    /// What was asked for.
    pub request: super::Request,
    /// Every node asked (or not asked, with why).
    pub nodes: Vec<NodeOutcome>,
    /// Every other file in the archive (path under [`ROOT`]).
    pub files: Vec<FileEntry>,
}

/// How one node's collection went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeOutcome {
    pub node: String,
    /// `answered`, `failed` or `timed_out`.
    pub status: String,
    /// Why it failed or timed out (and since when its lease is gone, when
    /// it is); for an answered node, a note if its lease is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Its API address as registered.
    pub api_address: String,
    /// How long the node took to answer (or to fail), seconds.
    pub seconds: f64,
    /// Its clock minus the coordinator's at the moment it answered
    /// (estimated at the middle of the request), seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_secs: Option<f64>,
    /// Bytes of its files (uncompressed).
    pub bytes: u64,
}

/// One file of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
}

/// Why a bundle file cannot be read.
#[derive(Debug, Error)]
pub enum BundleError {
    #[error("read bundle {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "bundle {path} is truncated (the compressed stream ends early: {detail}); copy the whole file again"
    )]
    Truncated { path: String, detail: String },
    #[error("bundle {path} is corrupt or not a vigil support bundle: {detail}")]
    Corrupt { path: String, detail: String },
    #[error("bundle {path} has no {MANIFEST}: not a vigil support bundle, or damaged")]
    NoManifest { path: String },
    #[error("bundle {path}: {MANIFEST} is not valid: {detail}")]
    BadManifest { path: String, detail: String },
    #[error("bundle {path}: format {found} is newer than this vigil reads ({FORMAT})")]
    Format { path: String, found: u32 },
    #[error("bundle {path}: file {file} is listed in the manifest but missing")]
    Missing { path: String, file: String },
    #[error(
        "bundle {path}: file {file} does not match the manifest ({detail}); the bundle is damaged"
    )]
    Mismatch {
        path: String,
        file: String,
        detail: String,
    },
    #[error("bundle {path}: {file} is not valid: {detail}")]
    BadFile {
        path: String,
        file: String,
        detail: String,
    },
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The manifest entry of one file.
pub fn entry(path: &str, data: &[u8]) -> FileEntry {
    FileEntry {
        path: path.to_string(),
        size: data.len() as u64,
        sha256: sha256_hex(data),
    }
}

/// Writes the archive: the manifest, then `files` in order.
pub fn write(manifest: &Manifest, files: &[(String, Vec<u8>)]) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mtime = manifest.created_unix.max(0.0) as u64;
    let manifest_json = serde_json::to_vec_pretty(manifest).map_err(std::io::Error::other)?;
    let mut append = |path: &str, data: &[u8]| -> std::io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, format!("{ROOT}/{path}"), data)
    };
    append(MANIFEST, &manifest_json)?;
    for (path, data) in files {
        append(path, data)?;
    }
    let gz = tar.into_inner()?;
    let mut gz = gz;
    gz.flush()?;
    gz.finish()
}

/// A bundle read back and checked against its manifest.
#[derive(Debug)]
pub struct Bundle {
    /// The file it was read from (for messages).
    pub path: String,
    pub manifest: Manifest,
    /// Every file but the manifest, by path under [`ROOT`].
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Bundle {
    /// Reads and checks a bundle file.
    pub fn read(path: &Path) -> Result<Bundle, BundleError> {
        let shown = path.display().to_string();
        let data = std::fs::read(path).map_err(|source| BundleError::Io {
            path: shown.clone(),
            source,
        })?;
        Bundle::from_bytes(&shown, &data)
    }

    /// Checks a bundle held in memory; `path` names it in errors.
    pub fn from_bytes(path: &str, data: &[u8]) -> Result<Bundle, BundleError> {
        let stream_err = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                BundleError::Truncated {
                    path: path.to_string(),
                    detail: e.to_string(),
                }
            } else {
                BundleError::Corrupt {
                    path: path.to_string(),
                    detail: e.to_string(),
                }
            }
        };
        if data.len() < 2 || data[..2] != [0x1f, 0x8b] {
            return Err(BundleError::Corrupt {
                path: path.to_string(),
                detail: "not gzip-compressed".into(),
            });
        }
        // Decompress fully first: a gzip trailer (CRC and length) that is
        // missing or wrong is only found at the end of the stream.
        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(data)
            .take(MAX_EXPANDED + 1)
            .read_to_end(&mut tar_bytes)
            .map_err(stream_err)?;
        if tar_bytes.len() as u64 > MAX_EXPANDED {
            return Err(BundleError::Corrupt {
                path: path.to_string(),
                detail: format!("expands beyond {MAX_EXPANDED} bytes"),
            });
        }
        let mut files = BTreeMap::new();
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let entries = archive.entries().map_err(stream_err)?;
        for e in entries {
            let mut e = e.map_err(stream_err)?;
            let name = e.path().map_err(stream_err)?.display().to_string();
            let Some(rel) = name.strip_prefix(&format!("{ROOT}/")) else {
                return Err(BundleError::Corrupt {
                    path: path.to_string(),
                    detail: format!("entry {name:?} is not under {ROOT}/"),
                });
            };
            let rel = rel.to_string();
            let mut content = Vec::new();
            e.read_to_end(&mut content).map_err(stream_err)?;
            files.insert(rel, content);
        }
        let manifest_bytes = files.remove(MANIFEST).ok_or(BundleError::NoManifest {
            path: path.to_string(),
        })?;
        let manifest: Manifest =
            serde_json::from_slice(&manifest_bytes).map_err(|e| BundleError::BadManifest {
                path: path.to_string(),
                detail: e.to_string(),
            })?;
        if manifest.format > FORMAT {
            return Err(BundleError::Format {
                path: path.to_string(),
                found: manifest.format,
            });
        }
        for f in &manifest.files {
            let Some(content) = files.get(&f.path) else {
                return Err(BundleError::Missing {
                    path: path.to_string(),
                    file: f.path.clone(),
                });
            };
            let mismatch = |detail: String| BundleError::Mismatch {
                path: path.to_string(),
                file: f.path.clone(),
                detail,
            };
            if content.len() as u64 != f.size {
                return Err(mismatch(format!(
                    "{} bytes, the manifest says {}",
                    content.len(),
                    f.size
                )));
            }
            if sha256_hex(content) != f.sha256 {
                return Err(mismatch("SHA-256 differs".into()));
            }
        }
        Ok(Bundle {
            path: path.to_string(),
            manifest,
            files,
        })
    }

    /// A JSON file of the bundle, decoded.
    pub fn json<T: serde::de::DeserializeOwned>(&self, file: &str) -> Result<T, BundleError> {
        let data = self.files.get(file).ok_or_else(|| BundleError::Missing {
            path: self.path.clone(),
            file: file.to_string(),
        })?;
        serde_json::from_slice(data).map_err(|e| BundleError::BadFile {
            path: self.path.clone(),
            file: file.to_string(),
            detail: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<u8> {
        let files = vec![
            ("cluster/a.json".to_string(), b"{\"a\":1}".to_vec()),
            ("nodes/n1/logs.jsonl".to_string(), vec![b'x'; 20_000]),
        ];
        let manifest = Manifest {
            format: FORMAT,
            vigil_version: "test".into(),
            created_unix: 1.0,
            duration_secs: 0.1,
            coordinator: "n1".into(),
            request: Default::default(),
            nodes: vec![],
            files: files.iter().map(|(p, d)| entry(p, d)).collect(),
        };
        write(&manifest, &files).unwrap()
    }

    #[test]
    fn round_trip() {
        let b = Bundle::from_bytes("x", &sample()).unwrap();
        assert_eq!(b.files.len(), 2);
        assert_eq!(b.files["cluster/a.json"], b"{\"a\":1}");
        assert_eq!(b.manifest.coordinator, "n1");
    }

    #[test]
    fn truncated_is_a_typed_error() {
        let data = sample();
        for cut in [0, 1, 10, data.len() / 2, data.len() - 1] {
            let err = Bundle::from_bytes("x", &data[..cut]).unwrap_err();
            assert!(
                matches!(
                    err,
                    BundleError::Truncated { .. } | BundleError::Corrupt { .. }
                ),
                "cut at {cut}: {err}"
            );
        }
        let err = Bundle::from_bytes("x", &data[..data.len() - 4]).unwrap_err();
        assert!(matches!(err, BundleError::Truncated { .. }), "{err}");
    }

    #[test]
    fn a_file_that_differs_from_the_manifest_is_found() {
        let files = vec![("a".to_string(), b"one".to_vec())];
        let mut manifest = Manifest {
            format: FORMAT,
            vigil_version: "t".into(),
            created_unix: 0.0,
            duration_secs: 0.0,
            coordinator: "n".into(),
            request: Default::default(),
            nodes: vec![],
            files: vec![entry("a", b"two")],
        };
        let err = Bundle::from_bytes("x", &write(&manifest, &files).unwrap()).unwrap_err();
        assert!(matches!(err, BundleError::Mismatch { .. }), "{err}");
        manifest.files = vec![entry("b", b"")];
        let err = Bundle::from_bytes("x", &write(&manifest, &files).unwrap()).unwrap_err();
        assert!(matches!(err, BundleError::Missing { .. }), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any damage gives an error or (if it hit nothing checked, which
        /// gzip's CRC makes nearly impossible) the same bundle — never a
        /// panic.
        #[test]
        fn damaged_bundles_never_panic(at in 0usize..4000, byte in any::<u8>(), cut in 0usize..4000) {
            let mut data = sample();
            let at = at % data.len();
            data[at] ^= byte.max(1);
            let cut = cut % (data.len() + 1);
            let _ = Bundle::from_bytes("x", &data);
            let _ = Bundle::from_bytes("x", &data[..cut]);
        }
    }
}
