//! `vigil_ebpf_*` on `/metrics`: the kernel's maps read at the scrape and
//! written as Prometheus text. Histograms are rendered here rather than
//! through the `metrics` facade because the kernel already aggregated them
//! into buckets (powers of two of microseconds): we copy its buckets
//! instead of replaying samples.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use vigil_ebpf::{BlkOp, Hist, Probe, Snapshot, SysOp};

use super::targets::{Names, names};
use crate::metrics::catalogue::{FAMILIES, Kind, Source};
use crate::metrics::names::*;

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// The eBPF families for this scrape.
pub fn render(node: &str) -> String {
    let mut page = Page::default();
    match super::tracer() {
        Some(t) => match t.read() {
            Ok(snap) => {
                page.gauge(EBPF_LOADED, vec![("node", node)], 1.0);
                kernel(&mut page, node, &snap, t.probes());
            }
            Err(e) => {
                tracing::warn!(error = %e, "eBPF: read maps");
                page.gauge(EBPF_LOADED, vec![("node", node)], 1.0);
            }
        },
        None => {
            page.gauge(EBPF_LOADED, vec![("node", node)], 0.0);
            let reason = super::unavailable()
                .map(|u| u.reason.as_str())
                .unwrap_or("disabled");
            page.gauge(
                EBPF_UNAVAILABLE,
                vec![("node", node), ("reason", reason)],
                1.0,
            );
        }
    }
    page.finish()
}

/// The families of the probes that run (a probe switched off has no
/// series rather than zeros that would read as "nothing happened").
fn kernel(page: &mut Page, node: &str, snap: &Snapshot, probes: &BTreeSet<Probe>) {
    let names = names();
    if probes.contains(&Probe::Syscalls) {
        syscalls(page, node, snap, &names);
    }
    if probes.contains(&Probe::Block) {
        block(page, node, snap, &names);
    }
    if probes.contains(&Probe::Tcp) {
        tcp(page, node, snap, &names);
    }
    if probes.contains(&Probe::RunQueue) {
        page.histogram(EBPF_RUNQUEUE_DELAY, vec![("node", node)], &snap.runqueue);
    }
}

fn syscalls(page: &mut Page, node: &str, snap: &Snapshot, names: &Names) {
    // Every disk × op, so error counters exist before the first error.
    let mut sys: BTreeMap<(u32, SysOp), &Hist> = BTreeMap::new();
    for s in &snap.syscalls {
        sys.insert((s.disk, s.op), &s.hist);
    }
    let empty = Hist::default();
    for (i, (uuid, _, _)) in names.disks.iter().enumerate() {
        for op in [SysOp::Read, SysOp::Write, SysOp::Fsync] {
            let h = sys.get(&(i as u32, op)).copied().unwrap_or(&empty);
            let labels = vec![("node", node), ("disk", uuid.as_str()), ("op", op.as_str())];
            page.histogram(EBPF_SYSCALL_LATENCY, labels.clone(), h);
            page.counter(EBPF_SYSCALL_ERRORS, labels, h.errors);
        }
    }
}

fn block(page: &mut Page, node: &str, snap: &Snapshot, names: &Names) {
    for b in &snap.block {
        let Some(dev) = names.devices.get(&b.dev) else {
            continue;
        };
        let op: BlkOp = b.op;
        page.histogram(
            EBPF_BLOCK_LATENCY,
            vec![
                ("node", node),
                ("device", dev.as_str()),
                ("op", op.as_str()),
            ],
            &b.hist,
        );
    }
    for d in &snap.devices {
        let Some(dev) = names.devices.get(&d.dev) else {
            continue;
        };
        let labels = vec![("node", node), ("device", dev.as_str())];
        page.counter(EBPF_BLOCK_ERRORS, labels.clone(), d.errors);
        page.gauge(EBPF_BLOCK_INFLIGHT, labels, d.inflight() as f64);
    }
}

fn tcp(page: &mut Page, node: &str, snap: &Snapshot, names: &Names) {
    for (peer, t) in super::peers::totals(snap, names) {
        let labels = vec![("node", node), ("peer_node", peer.as_str())];
        page.counter(EBPF_TCP_RETRANSMITS, labels.clone(), t.retransmits);
        page.histogram(EBPF_TCP_RTT, labels, &t.rtt);
    }
}

/// Series grouped by family, written with the catalogue's HELP and TYPE.
#[derive(Default)]
struct Page {
    families: BTreeMap<&'static str, String>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_text(labels: &[(&'static str, &str)], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

impl Page {
    fn series(&mut self, name: &'static str) -> &mut String {
        self.families.entry(name).or_default()
    }

    fn gauge(&mut self, name: &'static str, labels: Labels<'_>, v: f64) {
        let l = label_text(&labels, None);
        let _ = writeln!(self.series(name), "{name}{l} {v}");
    }

    fn counter(&mut self, name: &'static str, labels: Labels<'_>, v: u64) {
        let l = label_text(&labels, None);
        let _ = writeln!(self.series(name), "{name}{l} {v}");
    }

    fn histogram(&mut self, name: &'static str, labels: Labels<'_>, h: &Hist) {
        let out = self.series(name);
        let mut cumulative = 0u64;
        for (s, n) in h.slots.iter().enumerate() {
            let Some(le) = Hist::upper_bound_seconds(s) else {
                break;
            };
            cumulative += n;
            let le = format!("{le}");
            let l = label_text(&labels, Some(("le", &le)));
            let _ = writeln!(out, "{name}_bucket{l} {cumulative}");
        }
        // +Inf is the count, so the last slot (longer than the largest
        // bound) is in it; count and buckets come from one read of a map
        // updated concurrently, so +Inf is never below the last bucket.
        let total = h.count.max(cumulative);
        let l = label_text(&labels, Some(("le", "+Inf")));
        let _ = writeln!(out, "{name}_bucket{l} {total}");
        let l = label_text(&labels, None);
        let _ = writeln!(out, "{name}_sum{l} {}", h.sum_ns as f64 / 1e9);
        let _ = writeln!(out, "{name}_count{l} {total}");
    }

    fn finish(self) -> String {
        let mut out = String::new();
        for (name, body) in self.families {
            let Some(fam) = FAMILIES
                .iter()
                .find(|f| f.name == name && f.source == Source::Kernel)
            else {
                continue;
            };
            let kind = match fam.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {}", fam.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            out.push_str(&body);
        }
        out
    }
}
