//! A real etcd (Debian's etcd-server 3.4) on loopback ports for a test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::agent::free_port;

/// A running single-member etcd; killed on drop.
pub struct Etcd {
    pub client_port: u16,
    /// Address it listens on (127.0.0.1 unless the test placed it on a
    /// network namespace's interface).
    pub host: String,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Etcd {
    /// Starts etcd with its data under `root/etcd`.
    pub fn start(root: &Path) -> Etcd {
        Etcd::start_on(root, free_port())
    }

    /// Starts etcd listening for clients on `client_port`.
    pub fn start_on(root: &Path, client_port: u16) -> Etcd {
        Etcd::start_at(root, "127.0.0.1", client_port)
    }

    /// Starts etcd listening on `host` (an address of the caller's network
    /// namespace) for clients on `client_port`.
    pub fn start_at(root: &Path, host: &str, client_port: u16) -> Etcd {
        let mut e = Etcd {
            client_port,
            host: host.to_string(),
            peer_port: free_port(),
            data_dir: root.join(format!("etcd-{client_port}")),
            log: root.join(format!("etcd-{client_port}.log")),
            child: None,
        };
        e.spawn();
        e
    }

    /// `--store` value for agents: `etcd://HOST:PORT`.
    pub fn store_url(&self) -> String {
        format!("etcd://{}:{}", self.host, self.client_port)
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap();
        let client = format!("http://{}:{}", self.host, self.client_port);
        let peer = format!("http://{}:{}", self.host, self.peer_port);
        let child = Command::new("etcd")
            .arg("--name=default")
            .arg(format!("--data-dir={}", self.data_dir.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"))
            .arg("--heartbeat-interval=10")
            .arg("--election-timeout=100")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (apt-get install etcd-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let ok = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={client}"))
                .args(["endpoint", "health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "etcd not healthy after 20 s:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Runs `etcdctl` against this etcd; returns stdout.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!(
                "--endpoints=http://{}:{}",
                self.host, self.client_port
            ))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGSTOP / SIGCONT: a store that stops answering without closing
    /// its connections (a frozen or partitioned etcd).
    pub fn signal(&self, sig: i32) {
        if let Some(c) = self.child.as_ref() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// Kills etcd (`kill -9`).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill9();
    }
}
