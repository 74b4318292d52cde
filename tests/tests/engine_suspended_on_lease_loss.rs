//! Self-fencing on lease loss (issue 17, item 2): an agent that cannot
//! renew its node lease stops its engines' replica I/O before the lease
//! can expire, and resumes once the lease is back and no newer engine
//! exists.
//!
//! One agent on a real etcd, a volume attached and written. etcd is frozen
//! (SIGSTOP: connections stay open, nothing answers), so the agent cannot
//! renew its lease. With `engine-on-lease-loss=io-error` a write on an open
//! NBD connection fails once the lease is nearly a TTL old; after etcd is
//! thawed writes succeed again (`EngineResumed`). With the default,
//! `suspend`, a write sent during the freeze is held — its client waits —
//! and completes after the thaw. Before self-fencing, both writes were
//! acknowledged while the node was, for the rest of the cluster, down.
//!
//! The suspension is visible from the node itself while the store is
//! frozen (nothing can be recorded there): `vigil_engine_suspended` is 1,
//! `vigil doctor` of that agent reports ENGINE_SUSPENDED under
//! STORE_UNREACHABLE, `engine show` says since when; after the thaw the
//! gauge is 0, the check clears and both suspensions count as resumed.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::agent::wait_until;
use vigil_tests::doctor::{check, doctor};
use vigil_tests::{Agent, Cluster, tools};

/// Longer than the lease TTL (10 s) minus the self-fence margin (3 s),
/// with room for the renewal period (2.5 s) and the 200 ms tick.
const PAST_THE_MARGIN: Duration = Duration::from_secs(9);

fn qemu_io(uri: &str, cmds: &[String]) -> Command {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    c.arg(uri);
    c
}

/// `GET /metrics` of `a`. Not `Agent::get`: while the store is frozen a
/// scrape waits for the store read's 5 s timeout, longer than its 2 s.
fn scrape(a: &Agent) -> String {
    let addr = a.endpoint.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "scrape: {page}");
    page
}

/// The value of the series `name{labels}` (labels exactly as rendered).
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

const SUSPENDED: &str = "vigil_engine_suspended{volume=\"v\"}";

/// What the node says about itself while its store is frozen: the gauge,
/// doctor's check (asked at once: each waits 5 s for the store) and
/// `engine show`.
fn while_suspended(n1: &Agent) {
    let (page, (code, report)) = std::thread::scope(|t| {
        let page = t.spawn(|| scrape(n1));
        let report = t.spawn(|| doctor(n1));
        (page.join().unwrap(), report.join().unwrap())
    });
    assert_eq!(
        sample(&page, SUSPENDED),
        Some(1.0),
        "suspended gauge:\n{page}"
    );
    assert_eq!(code, 2, "doctor exit code: {report}");
    let c = check(&report, "ENGINE_SUSPENDED").expect("ENGINE_SUSPENDED in doctor");
    assert_eq!(c["severity"], "error", "{c}");
    let item = &c["items"][0];
    assert_eq!(item["object"], "volume/v", "{c}");
    assert!(
        item["message"]
            .as_str()
            .unwrap()
            .contains("could not renew its liveness lease"),
        "{item}"
    );
    assert_eq!(item["caused_by"][0]["code"], "STORE_UNREACHABLE", "{item}");
    assert!(!c["cause"].as_str().unwrap().is_empty() && !c["fix"].as_str().unwrap().is_empty());
    let engine = n1.engine("v");
    let since = engine["suspended"]["since_unix"].as_u64();
    assert!(since.is_some_and(|s| s > 0), "engine show: {engine}");
    let (ok, table, err) = n1.cli(&["engine", "show", "v"]);
    assert!(ok && table.contains("Suspended:  since "), "{table}{err}");
    eprintln!("while suspended: {}\n{table}", item["message"]);
}

/// After the thaw: the gauge is back to 0 and the check is gone.
fn after_resume(n1: &Agent) {
    wait_until(
        "the suspended gauge back to 0",
        Duration::from_secs(40),
        || sample(&scrape(n1), SUSPENDED) == Some(0.0),
    );
    let mut report = Value::Null;
    wait_until("ENGINE_SUSPENDED cleared", Duration::from_secs(40), || {
        report = doctor(n1).1;
        check(&report, "ENGINE_SUSPENDED").is_none()
    });
    assert!(n1.engine("v")["suspended"].is_null());
}

#[test]
fn a_node_that_cannot_renew_its_lease_stops_writing_and_resumes_after() {
    let c = Cluster::on_etcd(&["n1"]);
    c["n1"].set("engine-on-lease-loss", "io-error");
    let uri = c.create_attached("v", "16MiB", 1, "n1");
    tools::run("qemu-io", &["-f", "raw", "-c", "write -P 0x11 0 64k", &uri]);
    // a controller round has cached the setting by now (every 2 s)
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sample(&scrape(&c["n1"]), SUSPENDED), Some(0.0));
    assert!(check(&doctor(&c["n1"]).1, "ENGINE_SUSPENDED").is_none());

    // io-error: an open connection's write fails once the lease is old.
    let mut session = tools::QemuIoSession::open(&uri);
    session.send("read -P 0x11 0 64k");
    c.etcd().signal(libc::SIGSTOP);
    let frozen = Instant::now();
    std::thread::sleep(PAST_THE_MARGIN);
    session.send("write -P 0x22 0 64k");
    c.etcd().signal(libc::SIGCONT);
    let thawed = Instant::now();
    let printed = session.finish();
    eprintln!("qemu-io during the freeze:\n{printed}");
    assert!(
        printed.contains("write failed"),
        "a write {:.1} s into the lease loss was acknowledged:\n{printed}",
        PAST_THE_MARGIN.as_secs_f64()
    );
    wait_until("writes succeed again", Duration::from_secs(40), || {
        tools::try_run("qemu-io", &["-f", "raw", "-c", "write -P 0x33 0 64k", &uri]).0
    });
    eprintln!(
        "writes resumed {:.1} s after the thaw ({:.1} s after the freeze)",
        thawed.elapsed().as_secs_f64(),
        frozen.elapsed().as_secs_f64()
    );
    let resumed = c["n1"]
        .event("volume/v", "EngineResumed")
        .expect("EngineResumed event");
    eprintln!("event: {}", resumed["message"]);
    assert!(tools::try_run("qemu-io", &["-f", "raw", "-c", "read -P 0x33 0 64k", &uri]).0);

    // suspend (the default): a write during the freeze is held, then done.
    c["n1"].set("engine-on-lease-loss", "suspend");
    std::thread::sleep(Duration::from_secs(3));
    c.etcd().signal(libc::SIGSTOP);
    std::thread::sleep(PAST_THE_MARGIN);
    let mut held = qemu_io(&uri, &["write -P 0x44 0 64k".into(), "flush".into()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while_suspended(&c["n1"]);
    let still_held = held.try_wait().unwrap().is_none();
    c.etcd().signal(libc::SIGCONT);
    assert!(
        still_held,
        "the write was not held while the lease was lost"
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    while held.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the held write never completed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = held.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("wrote 65536/65536"),
        "the held write did not complete after the lease came back: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tools::try_run("qemu-io", &["-f", "raw", "-c", "read -P 0x44 0 64k", &uri]).0);
    after_resume(&c["n1"]);
    // both suspensions (io-error, then suspend) ended in a resume
    let page = scrape(&c["n1"]);
    let resumed = "vigil_engine_suspensions_total{volume=\"v\",outcome=\"resumed\"}";
    assert!(
        sample(&page, resumed).is_some_and(|n| n >= 2.0),
        "{resumed}:\n{page}"
    );
    assert!(!page.contains("outcome=\"fenced\""), "{page}");
}
