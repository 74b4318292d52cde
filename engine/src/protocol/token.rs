//! Loading (or creating) the cluster token.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{ClusterToken, TokenError};

/// Environment variable that overrides the token file.
pub(crate) const TOKEN_ENV: &str = "VIGIL_CLUSTER_TOKEN";
/// Name of the token file in the data directory.
pub(crate) const TOKEN_FILE: &str = "cluster-token";

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> TokenError {
    let path = path.to_path_buf();
    move |source| TokenError::Io { op, path, source }
}

/// `env` is the value of [`TOKEN_ENV`], if set.
pub(crate) fn load(data_dir: &Path, env: Option<String>) -> Result<ClusterToken, TokenError> {
    if let Some(v) = env {
        let v = v.trim();
        if !v.is_empty() {
            return Ok(ClusterToken(v.to_string()));
        }
    }
    let path = data_dir.join(TOKEN_FILE);
    match read_token_file(&path) {
        Ok(t) => return Ok(t),
        Err(TokenError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    create_token_file(data_dir, &path)
}

fn read_token_file(path: &Path) -> Result<ClusterToken, TokenError> {
    let text = fs::read_to_string(path).map_err(io_err("read", path))?;
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "cluster token file is readable by group or others; it should be mode 0600"
        );
    }
    let t = text.trim();
    if t.is_empty() {
        return Err(TokenError::Empty(path.display().to_string()));
    }
    Ok(ClusterToken(t.to_string()))
}

/// Writes a new random token crash-safely: a complete, synced temporary file
/// is hard-linked into place (which fails if another process got there
/// first, in which case its token wins) and the directory synced.
fn create_token_file(data_dir: &Path, path: &Path) -> Result<ClusterToken, TokenError> {
    fs::create_dir_all(data_dir).map_err(io_err("create directory", data_dir))?;
    let mut raw = [0u8; 32];
    rand::fill(&mut raw);
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();

    let mut suffix = [0u8; 8];
    rand::fill(&mut suffix);
    let tmp: PathBuf = data_dir.join(format!(
        ".{TOKEN_FILE}.tmp-{}",
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        f.write_all(format!("{token}\n").as_bytes())
            .map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("sync", &tmp))?;
        drop(f);
        match fs::hard_link(&tmp, path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Someone else created it meanwhile: use theirs.
                return read_token_file(path);
            }
            Err(e) => return Err(io_err("link", path)(e)),
        }
        fs::File::open(data_dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync", data_dir))?;
        tracing::info!(path = %path.display(), "generated a new cluster token");
        Ok(ClusterToken(token))
    })();
    let _ = fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_wins_and_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let t = load(dir.path(), Some("  secret \n".into())).unwrap();
        assert_eq!(t.as_bytes(), b"secret");
        assert!(!dir.path().join(TOKEN_FILE).exists());
    }

    #[test]
    fn empty_env_falls_back_to_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(TOKEN_FILE), "from-file\n").unwrap();
        let t = load(dir.path(), Some("   ".into())).unwrap();
        assert_eq!(t.as_bytes(), b"from-file");
    }

    #[test]
    fn generates_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("data");
        let a = load(&sub, None).unwrap();
        assert_eq!(a.as_bytes().len(), 64);
        assert!(a.as_bytes().iter().all(|b| b.is_ascii_hexdigit()));
        let path = sub.join(TOKEN_FILE);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load(&sub, None).unwrap();
        assert_eq!(a.as_bytes(), b.as_bytes());
        // No temporary files left behind.
        assert_eq!(fs::read_dir(&sub).unwrap().count(), 1);
    }

    #[test]
    fn empty_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(TOKEN_FILE), " \n").unwrap();
        assert!(matches!(load(dir.path(), None), Err(TokenError::Empty(_))));
    }

    #[test]
    fn debug_is_redacted() {
        let t = ClusterToken::new("hunter2");
        assert!(!format!("{t:?}").contains("hunter2"));
    }
}
