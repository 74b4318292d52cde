//! One `vigil agent` process on loopback with its own data dir and ports.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `vigil` binary under test: `$VIGIL_BIN`, else the workspace's
/// release build, else its debug build.
pub fn vigil_bin() -> PathBuf {
    if let Ok(p) = std::env::var("VIGIL_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    for profile in ["release", "debug"] {
        let p = target.join(profile).join("vigil");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "vigil binary not found under {}: run `cargo build --release` first (the test script does)",
        target.display()
    );
}

/// A free TCP port on 127.0.0.1 (bound and released; tiny race accepted).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running agent.
pub struct Agent {
    /// Node name.
    pub name: String,
    /// Data directory (kept across restarts).
    pub data_dir: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    listen_port: u16,
    /// Address the agent listens on (127.0.0.1 unless it runs in a
    /// network namespace of the test, see [`crate::netns`]).
    pub host: String,
    /// Command the agent runs under, e.g. `ip netns exec NS` (empty: none).
    wrap: Vec<String>,
    token: String,
    /// Extra `vigil agent` arguments (kept across restarts).
    pub extra_args: Vec<String>,
    /// Extra environment of the agent process (kept across restarts),
    /// e.g. `VIGIL_FAILPOINTS`.
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    /// Starts an agent named `name` with a data dir under `root`.
    pub fn start(root: &Path, name: &str) -> Agent {
        Agent::start_with_token(root, name, "test-cluster-token")
    }

    /// Starts an agent with a specific cluster token.
    pub fn start_with_token(root: &Path, name: &str, token: &str) -> Agent {
        Agent::start_with(root, name, token, &[])
    }

    /// Starts an agent with extra `vigil agent` arguments (`--store`,
    /// `--label`, `--disk`...), kept for restarts.
    pub fn start_with(root: &Path, name: &str, token: &str, extra_args: &[&str]) -> Agent {
        let mut a = Agent::start_unready(root, name, token, extra_args);
        a.wait_ready();
        a
    }

    /// Test disks are directories on the machine's own filesystem, which
    /// other work shares: how full it is says nothing about vigil. The
    /// default 25 % free-space floor would refuse every replica on a host
    /// that is 76 % full, so tests lower it to 1 % (tests about the floor
    /// set it themselves).
    fn ignore_host_disk_fill(&self) {
        let (ok, _, err) = self.cli(&[
            "settings",
            "set",
            "storage-minimal-available-percentage",
            "1",
        ]);
        assert!(ok, "lower the free-space floor: {err}");
    }

    /// Starts an agent with extra arguments and environment variables.
    pub fn start_with_env(
        root: &Path,
        name: &str,
        token: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        let mut a = Agent::start_unready_env(root, name, token, extra_args, env);
        a.wait_ready();
        a
    }

    /// Starts an agent without waiting for its API (for agents that are
    /// expected to wait on something, e.g. an unreachable store).
    pub fn start_unready(root: &Path, name: &str, token: &str, extra_args: &[&str]) -> Agent {
        Agent::start_unready_env(root, name, token, extra_args, &[])
    }

    /// Starts an agent listening on `host` under the command `wrap` (e.g.
    /// `["ip", "netns", "exec", NS]` to run it in a network namespace the
    /// test made; the caller must be able to reach `host`).
    pub fn start_in(
        root: &Path,
        name: &str,
        token: &str,
        extra_args: &[&str],
        host: &str,
        wrap: &[&str],
    ) -> Agent {
        let mut a = Agent::new(root, name, token, extra_args, &[]);
        a.host = host.to_string();
        a.endpoint = format!("http://{host}:{}", a.listen_port);
        a.wrap = wrap.iter().map(|s| s.to_string()).collect();
        a.spawn();
        a
    }

    fn start_unready_env(
        root: &Path,
        name: &str,
        token: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        let mut a = Agent::new(root, name, token, extra_args, env);
        a.spawn_only();
        a
    }

    fn new(
        root: &Path,
        name: &str,
        token: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        let data_dir = root.join(name);
        std::fs::create_dir_all(&data_dir).unwrap();
        let port = free_port();
        Agent {
            name: name.to_string(),
            endpoint: format!("http://127.0.0.1:{port}"),
            log: root.join(format!("{name}.log")),
            data_dir,
            listen_port: port,
            host: "127.0.0.1".to_string(),
            wrap: Vec::new(),
            token: token.to_string(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        }
    }

    /// The agent's process id (panics when it is not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent running").id()
    }

    /// Whether the agent was started and not since stopped or killed by
    /// this handle (a process that died by itself still counts).
    pub fn is_started(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn spawn(&mut self) {
        self.spawn_only();
        self.wait_ready();
    }

    fn spawn_only(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = match self.wrap.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(vigil_bin());
                c
            }
            None => Command::new(vigil_bin()),
        };
        let child = cmd
            .args(["agent", "--node-name", &self.name, "--listen"])
            .arg(format!("{}:{}", self.host, self.listen_port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .env("VIGIL_CLUSTER_TOKEN", &self.token)
            .env("VIGIL_LOG", "info,vigil_engine=debug")
            // eBPF off unless a test asks (`--ebpf required` wins over the
            // env): every loaded agent's sched programs run on each context
            // switch of the machine, and dozens of agents in parallel tests
            // would tax the whole suite. The ebpf_* tests turn it on.
            .env("VIGIL_EBPF", "off")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Waits until the agent's API answers (panics after 20 s).
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "agent {} exited during start ({status}):\n{}",
                    self.name,
                    self.log_text()
                );
            }
            if http_get_at(&self.host, self.listen_port, "/healthz").is_some() {
                self.ignore_host_disk_fill();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "agent {} not ready after 20 s:\n{}",
            self.name,
            self.log_text()
        );
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`: a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }

    /// SIGSTOP / SIGCONT: freeze and thaw.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = self.child.as_ref() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// Starts the agent again on the same data dir and API port.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Starts the agent again after [`Agent::stop`] or [`Agent::kill9`]
    /// (same data dir, API port and arguments) and waits for its API.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "agent {} is still running", self.name);
        self.spawn();
    }

    /// Waits until `node get NAME` shows this node ready: the liveness
    /// lease is written a moment after the API first answers, and until
    /// then nothing is scheduled on the node (panics after 10 s).
    pub fn wait_live(&self) {
        wait_until(
            &format!("node {} ready", self.name),
            Duration::from_secs(10),
            || self.json(&["node", "get", &self.name])["ready"] == true,
        );
    }

    /// The CLI against this agent. Beyond loopback, mutating calls need the
    /// cluster token (as an operator's shell would have it).
    fn cli_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(vigil_bin());
        c.arg("--endpoint").arg(&self.endpoint).args(args);
        if !self.host.starts_with("127.") {
            c.env("VIGIL_CLUSTER_TOKEN", &self.token);
        }
        c
    }

    /// Runs the CLI against this agent; returns (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.cli_command(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs the CLI; returns (exit code, stdout, stderr) — for commands
    /// whose exit code means something (`vigil doctor`).
    pub fn cli_code(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.cli_command(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `GET path` on this agent's API listener; the body on a 200.
    pub fn get(&self, path: &str) -> Option<String> {
        http_get_at(&self.host, self.listen_port, path)
    }

    /// Runs the CLI with `-o json`, asserts success, parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut full = vec!["-o", "json"];
        full.extend_from_slice(args);
        let (ok, out, err) = self.cli(&full);
        assert!(
            ok,
            "vigil {args:?} failed: {err}\nagent log:\n{}",
            self.log_text()
        );
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("vigil {args:?}: bad JSON ({e}): {out}"))
    }

    /// Creates a replica; returns its `tcp://` URL.
    pub fn create_replica(&self, name: &str, size: &str) -> String {
        let v = self.json(&["replica", "create", name, "--size", size]);
        v["url"].as_str().unwrap().to_string()
    }

    /// Creates an engine; returns its `nbd://` URI.
    pub fn create_engine(&self, name: &str, size: &str, replicas: &[&str]) -> Value {
        let mut args = vec!["engine", "create", name, "--size", size];
        for r in replicas {
            args.push("--replica");
            args.push(r);
        }
        self.json(&args)
    }

    /// `engine show -o json`.
    pub fn engine(&self, name: &str) -> Value {
        self.json(&["engine", "show", name])
    }

    /// The replicas of `volume` as `volume get -o json` lists them.
    pub fn replicas(&self, volume: &str) -> Vec<Value> {
        self.json(&["volume", "get", volume])["replicas"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The events about `object` (`KIND/NAME`), oldest first.
    pub fn events_of(&self, object: &str) -> Vec<Value> {
        self.json(&["events", "--object", object])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The first event about `object` with `reason`, if any.
    pub fn event(&self, object: &str, reason: &str) -> Option<Value> {
        self.events_of(object)
            .into_iter()
            .find(|e| e["reason"] == reason)
    }

    /// `vigil settings set NAME VALUE`, asserting success.
    pub fn set(&self, name: &str, value: &str) {
        let (ok, _, err) = self.cli(&["settings", "set", name, value]);
        assert!(ok, "settings set {name} {value}: {err}");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A minimal HTTP GET on loopback; the body on a 200.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    http_get_at("127.0.0.1", port, path)
}

/// A minimal HTTP GET on `host:port`; the body on a 200.
pub fn http_get_at(host: &str, port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect((host, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    if !buf.starts_with("HTTP/1.1 200") {
        return None;
    }
    buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// Waits until `f` is true, polling; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}
