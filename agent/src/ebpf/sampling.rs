//! When the syscall probe is attached.
//!
//! Any syscall tracepoint in use makes every syscall of every task on the
//! machine take the kernel's slow entry and exit path (the kernel flags
//! all tasks when the first one attaches), and that, not the programs,
//! is what it costs: measured here, about 9 % of a CPU-bound NBD
//! workload's IOPS with the probe attached all the time, against about
//! 2 % for the block, tcp and run-queue probes together
//! (`bench/ebpf_overhead.py`). So the probe is sampled: attached for
//! `--ebpf-syscall-duty` percent of each 10 s cycle (20 % by default,
//! which keeps one burst in every health window), and attached
//! continuously for [`ESCALATION`] after the engines' own timing shows a
//! replica write path slow or failing — when the kernel's view is what
//! the diagnosis needs, it gets every call.

use std::time::{Duration, Instant};

use vigil_ebpf::Tracer;

use super::summary::{Legs, engine_legs_in};

/// One sampling cycle.
pub const CYCLE_SECS: u64 = 10;
/// How long the probe stays attached after the last sign of trouble.
pub const ESCALATION: Duration = Duration::from_secs(60);
/// A replica's write legs averaging this or more over a check are trouble…
const SLOW_LEG_SECONDS: f64 = 0.02;
/// …when there were at least this many.
const SLOW_LEG_MIN_WRITES: u64 = 3;
/// The engines' figures are checked this often (it renders the metrics).
const CHECK_EVERY_SECS: u64 = 2;

pub struct Sampler {
    /// Seconds attached per cycle (1..=CYCLE_SECS).
    on_secs: u64,
    escalated_until: Option<Instant>,
    legs: Legs,
    faults: f64,
    attached_secs: u64,
    warned: bool,
    /// Whether `legs` and `faults` hold a first reading to compare with.
    primed: bool,
}

impl Sampler {
    /// `duty_pct`: 1..=100 percent of the time attached (100: always).
    pub fn new(duty_pct: u8) -> Sampler {
        let on_secs = (u64::from(duty_pct.clamp(1, 100)) * CYCLE_SECS).div_ceil(100);
        Sampler {
            on_secs: on_secs.clamp(1, CYCLE_SECS),
            escalated_until: None,
            legs: Legs::new(),
            faults: 0.0,
            attached_secs: 0,
            warned: false,
            primed: false,
        }
    }

    /// Seconds the probe has been attached since the start.
    pub fn attached_secs(&self) -> u64 {
        self.attached_secs
    }

    /// Called once a second: decides, and attaches or detaches.
    pub fn step(&mut self, tracer: &Tracer, tick: u64) {
        let now = Instant::now();
        if tick.is_multiple_of(CHECK_EVERY_SECS) && self.trouble() {
            if self.escalated_until.is_none_or(|t| t < now) {
                tracing::info!(
                    "eBPF: a replica write path looks slow or failing; tracing syscalls continuously for {} s",
                    ESCALATION.as_secs()
                );
            }
            self.escalated_until = Some(now + ESCALATION);
        }
        let escalated = self.escalated_until.is_some_and(|t| t > now);
        let want = escalated || tick % CYCLE_SECS < self.on_secs;
        match tracer.attach_syscalls(want) {
            Ok(()) => self.warned = false,
            Err(e) if !self.warned => {
                self.warned = true;
                tracing::warn!(error = %e, attach = want, "eBPF: switch the syscall probe");
            }
            Err(_) => {}
        }
        if tracer.syscalls_attached() {
            self.attached_secs += 1;
        }
    }

    /// Whether the engines' write legs slowed down or a replica faulted
    /// since the last check.
    fn trouble(&mut self) -> bool {
        let text = crate::metrics::recorded_text();
        let legs = engine_legs_in(&text);
        let faults = faults_total(&text);
        let slow = legs.iter().any(|(replica, (sum, n))| {
            let (old_sum, old_n) = self.legs.get(replica).copied().unwrap_or((0.0, 0));
            let writes = n.saturating_sub(old_n);
            writes >= SLOW_LEG_MIN_WRITES && (sum - old_sum) / writes as f64 >= SLOW_LEG_SECONDS
        });
        let faulted = faults > self.faults;
        self.legs = legs;
        self.faults = faults;
        // The first reading covers everything since the start: only a
        // baseline.
        let primed = std::mem::replace(&mut self.primed, true);
        primed && (slow || faulted)
    }
}

/// `vigil_replica_faults_total`, summed over its series.
fn faults_total(text: &str) -> f64 {
    let name = vigil_engine::engine::metrics::REPLICA_FAULTS_TOTAL;
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
