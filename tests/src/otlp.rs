//! A real OTLP/HTTP trace receiver (`tests/otlp_receiver.py`, decoding with
//! PyPI's `opentelemetry-proto`) and the spans it received.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// One received span.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// The `vigil.node` resource attribute.
    pub node: String,
    /// The `service.instance.id` resource attribute.
    pub service_instance: String,
    pub attributes: Value,
}

/// The receiver process; killed on drop.
pub struct Receiver {
    child: Child,
    /// `http://127.0.0.1:PORT`, for `--otlp-endpoint`.
    pub endpoint: String,
    out: PathBuf,
}

impl Receiver {
    /// Starts the receiver on a free loopback port, writing to `dir`.
    pub fn start(dir: &Path) -> Receiver {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("otlp_receiver.py");
        let out = dir.join("spans.jsonl");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3 otlp_receiver.py (tests/run.sh installs opentelemetry-proto)");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let port: u16 = first.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("otlp_receiver.py did not print its port (got {first:?}); is opentelemetry-proto installed?")
        });
        Receiver {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            out,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
                Span {
                    trace_id: s("trace_id"),
                    span_id: s("span_id"),
                    parent_span_id: s("parent_span_id"),
                    name: s("name"),
                    node: s("node"),
                    service_instance: s("service_instance"),
                    attributes: v["attributes"].clone(),
                }
            })
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `span`'s parent chain (within `by_id`) reaches `ancestor`.
pub fn descends_from(span: &Span, ancestor: &str, by_id: &HashMap<String, Span>) -> bool {
    let mut cur = span.parent_span_id.clone();
    for _ in 0..64 {
        if cur == ancestor {
            return true;
        }
        match by_id.get(&cur) {
            Some(p) => cur = p.parent_span_id.clone(),
            None => return false,
        }
    }
    false
}
