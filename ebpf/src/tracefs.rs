//! tracefs: tracepoints are attached by id, read from
//! `<tracefs>/events/<category>/<name>/id`. A fresh machine may not have it
//! mounted; as root we mount it (what `mount -t tracefs tracefs
//! /sys/kernel/tracing` does).

use std::ffi::CString;
use std::path::Path;

const MOUNT_POINT: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

fn present() -> bool {
    [MOUNT_POINT, DEBUGFS_TRACING]
        .iter()
        .any(|p| Path::new(p).join("events").is_dir())
}

/// Makes sure tracefs is reachable; mounts it when missing. Err says why not.
pub fn ensure() -> Result<(), String> {
    if present() {
        return Ok(());
    }
    let (Ok(src), Ok(target), Ok(fstype)) = (
        CString::new("tracefs"),
        CString::new(MOUNT_POINT),
        CString::new("tracefs"),
    ) else {
        return Err("bad mount arguments".into());
    };
    // SAFETY: every pointer is a valid NUL-terminated string that outlives
    // the call; data is null, which mount(2) accepts for tracefs.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!(
            "tracefs is not mounted and mounting it at {MOUNT_POINT} failed: {e}"
        ));
    }
    if present() {
        Ok(())
    } else {
        Err(format!(
            "mounted tracefs at {MOUNT_POINT} but it has no events/"
        ))
    }
}
