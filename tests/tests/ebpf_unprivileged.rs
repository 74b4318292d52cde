//! An agent without privileges (user nobody via `setpriv`): it starts,
//! serves a volume (written and read back through NBD), and says why eBPF
//! is off — `vigil_ebpf_loaded 0` and `vigil_ebpf_unavailable{reason=
//! "not_permitted"} 1` on /metrics, and the reason in its log. With
//! `--ebpf required` the same agent refuses to start and says why.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vigil_tests::agent::{free_port, http_get, vigil_bin, wait_until};
use vigil_tests::prom::sample;
use vigil_tests::tools;

const NOBODY: &str = "65534";

/// A directory user nobody can write (the test's tempdir is root's 0700).
fn nobody_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vigil-nobody-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

fn spawn_as_nobody(data: &Path, port: u16, extra: &[&str], log: &Path) -> Child {
    Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
        ])
        .arg(vigil_bin())
        .args(["agent", "--node-name", "n1", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data.join("data"))
        .args(extra)
        .env("VIGIL_CLUSTER_TOKEN", "tok")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn cli(port: u16, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(vigil_bin())
        .arg("--endpoint")
        .arg(format!("http://127.0.0.1:{port}"))
        .args(args)
        .env("VIGIL_CLUSTER_TOKEN", "tok")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

#[test]
fn unprivileged_agent_serves_io_and_reports_ebpf_not_permitted() {
    let dir = nobody_dir("auto");
    let port = free_port();
    let log = dir.join("agent.log");
    let agent = Kill(spawn_as_nobody(&dir, port, &[], &log));
    wait_until("agent answers", Duration::from_secs(30), || {
        http_get(port, "/readyz").is_some()
    });
    let (ok, _, err) = cli(
        port,
        &[
            "settings",
            "set",
            "storage-minimal-available-percentage",
            "1",
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = cli(
        port,
        &[
            "volume",
            "create",
            "v",
            "--size",
            "16MiB",
            "--replicas",
            "1",
        ],
    );
    assert!(ok, "create: {err}");
    let (ok, out, err) = cli(port, &["volume", "attach", "v"]);
    assert!(ok, "attach: {err}");
    let endpoint = out.trim().to_string();
    let data = dir.join("payload");
    tools::random_file(&data, 4 << 20, 3);
    tools::qemu_write(&data, &endpoint);
    assert!(
        tools::qemu_equal(&data, &endpoint),
        "volume content differs"
    );

    let page = http_get(port, "/metrics").unwrap();
    assert_eq!(
        sample(&page, "vigil_ebpf_loaded", &[("node", "n1")]),
        Some(0.0),
        "{page}"
    );
    assert_eq!(
        sample(
            &page,
            "vigil_ebpf_unavailable",
            &[("node", "n1"), ("reason", "not_permitted")]
        ),
        Some(1.0),
        "{page}"
    );
    assert!(
        !page.contains("vigil_ebpf_syscall_latency_seconds"),
        "no kernel series without eBPF"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("eBPF tracing unavailable") && text.contains("not_permitted"),
        "the log says why: {text}"
    );
    drop(agent);

    // --ebpf required: refuses to start, naming the reason.
    let dir2 = nobody_dir("required");
    let log2 = dir2.join("agent.log");
    let mut child = spawn_as_nobody(&dir2, free_port(), &["--ebpf", "required"], &log2);
    let mut status = None;
    wait_until("agent exits", Duration::from_secs(20), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert!(!status.unwrap().success(), "started without eBPF");
    let text = std::fs::read_to_string(&log2).unwrap();
    assert!(
        text.contains("--ebpf required") && text.contains("not_permitted"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&dir2);
}
