//! A real Prometheus server (Debian's `prometheus`) on a loopback port for
//! a test, and its HTTP API: instant and range queries, alerts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::free_port;

/// A running Prometheus; killed on drop.
pub struct Prometheus {
    pub port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl Prometheus {
    /// Starts Prometheus with `config` (a prometheus.yml) and its TSDB
    /// under `root/prometheus-data`; waits until it is ready.
    pub fn start(root: &Path, config: &Path) -> Prometheus {
        let port = free_port();
        let log = root.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                root.join("prometheus-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start prometheus (apt-get install prometheus)");
        let mut p = Prometheus {
            port,
            log,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(c) = p.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("prometheus exited ({status}):\n{}", p.log_text());
            }
            if get(port, "/-/ready").is_some_and(|(code, _)| code == 200) {
                return p;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("prometheus not ready after 30 s:\n{}", p.log_text());
    }

    /// Prometheus's own log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v1/...`; the `data` of a successful answer, else the
    /// error text.
    pub fn api(&self, path_and_query: &str) -> Result<Value, String> {
        let (code, body) = get(self.port, path_and_query).ok_or_else(|| "no answer".to_string())?;
        let v: Value =
            serde_json::from_str(&body).map_err(|e| format!("HTTP {code}: {e}: {body}"))?;
        if v["status"] != "success" {
            return Err(format!("HTTP {code}: {v}"));
        }
        Ok(v["data"].clone())
    }

    /// Instant query at now: the result series (vector or matrix).
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let d = self.api(&format!("/api/v1/query?query={}", encode(expr)))?;
        Ok(d["result"].as_array().cloned().unwrap_or_default())
    }

    /// Range query over `[start, end]` (Unix seconds) with `step` seconds,
    /// as Grafana runs a panel over its time range.
    pub fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<Value>, String> {
        let d = self.api(&format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={step}",
            encode(expr)
        ))?;
        Ok(d["result"].as_array().cloned().unwrap_or_default())
    }

    /// The alerts Prometheus holds now (pending and firing).
    pub fn alerts(&self) -> Vec<Value> {
        self.api("/api/v1/alerts")
            .map(|d| d["alerts"].as_array().cloned().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Percent-encodes a query parameter (everything but unreserved bytes).
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A plain HTTP/1.0 GET on loopback (no chunked answers); (status, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}
