//! Traces: a rebuild is one trace spanning both agents, received by a real
//! OTLP/HTTP receiver; an agent without an endpoint sends nothing.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::collections::HashMap;
use std::time::Duration;

use vigil_tests::agent::wait_until;
use vigil_tests::otlp::{Receiver, Span, descends_from};
use vigil_tests::{Agent, tools};

const TOKEN: &str = "test-cluster-token";

#[test]
fn rebuild_is_one_trace_across_agents() {
    let root = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(root.path());
    let otlp = ["--otlp-endpoint", receiver.endpoint.as_str()];
    // n1 also traces every NBD request.
    let sampled = [&otlp[..], &["--trace-io-sample-rate", "1"]].concat();
    let mut a = Agent::start_with(root.path(), "n1", TOKEN, &sampled);
    let mut b = Agent::start_with(root.path(), "n2", TOKEN, &otlp);
    let mut quiet = Agent::start_with(root.path(), "n3", TOKEN, &[]);

    // n1: an engine over its local replica, holding data in a snapshot and
    // in the head; n2: an empty replica, added over tcp -> rebuild.
    let r1 = a.create_replica("tr-r1", "64MiB");
    let e = a.create_engine("tr", "64MiB", &[&r1]);
    let uri = e["nbd_uri"].as_str().unwrap().to_string();
    tools::run("qemu-io", &["-f", "raw", &uri, "-c", "write -P 0x11 1M 2M"]);
    a.json(&["snapshot", "create", "tr", "s1"]);
    tools::run("qemu-io", &["-f", "raw", &uri, "-c", "write -P 0x22 8M 1M"]);
    let r2 = b.create_replica("tr-r2", "64MiB");
    a.json(&["engine", "add-replica", "tr", &r2]);
    wait_until("n2's replica RW", Duration::from_secs(60), || {
        a.engine("tr")["replicas"][1]["mode"] == "RW"
    });

    // The agent without an endpoint does traced-looking work too.
    let r3 = quiet.create_replica("tr-r3", "64MiB");
    quiet.create_engine("quiet", "64MiB", &[&r3]);
    quiet.json(&["snapshot", "create", "quiet", "q1"]);

    // SIGTERM flushes the exporters' buffers.
    a.stop();
    b.stop();
    quiet.stop();

    let spans = receiver.spans();
    let by_id: HashMap<String, Span> = spans
        .iter()
        .map(|s| (s.span_id.clone(), s.clone()))
        .collect();
    let summary = || {
        spans
            .iter()
            .map(|s| {
                format!(
                    "{} {} {} <- {}",
                    s.node, s.name, s.span_id, s.parent_span_id
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let rebuilds: Vec<&Span> = spans.iter().filter(|s| s.name == "rebuild").collect();
    assert_eq!(rebuilds.len(), 1, "one rebuild span:\n{}", summary());
    let rebuild = rebuilds[0];
    assert_eq!(rebuild.node, "n1");
    assert_eq!(rebuild.service_instance, "n1");
    assert_eq!(
        rebuild.attributes["volume"], "tr",
        "{:?}",
        rebuild.attributes
    );
    assert_eq!(rebuild.attributes["replica"], r2.as_str());
    assert_eq!(rebuild.attributes["source"], r1.as_str());

    // Server-side spans on n2, in the rebuild's trace, under the rebuild span.
    let on_n2: Vec<&Span> = spans
        .iter()
        .filter(|s| s.node == "n2" && s.trace_id == rebuild.trace_id)
        .collect();
    for op in [
        "replica.snapshot",
        "replica.stage_layer",
        "replica.write_staged",
        "replica.install_chain",
    ] {
        let s = on_n2
            .iter()
            .find(|s| s.name == op)
            .unwrap_or_else(|| panic!("no {op} span from n2 in the rebuild trace:\n{}", summary()));
        assert!(
            descends_from(s, &rebuild.span_id, &by_id),
            "{op} on n2 does not descend from the rebuild span:\n{}",
            summary()
        );
        assert_eq!(s.attributes["replica"], "tr-r2");
    }
    // ... and the source side (n1's local replica) in the same trace (no
    // layer_checksum: a layer copied to a fresh replica is hashed as it
    // streams, not read twice).
    for op in ["replica.layer_extents", "replica.read_layer"] {
        assert!(
            spans.iter().any(|s| s.node == "n1"
                && s.name == op
                && descends_from(s, &rebuild.span_id, &by_id)),
            "no {op} span from n1 under the rebuild:\n{}",
            summary()
        );
    }
    // Every API request got a span named after its route pattern.
    assert!(
        spans
            .iter()
            .any(|s| s.node == "n1" && s.name == "POST /v1/engines/{name}/replicas"),
        "{}",
        summary()
    );

    // Sampled data-path I/O: NBD writes on n1 (rate 1), none on n2 (rate 0).
    assert!(
        spans
            .iter()
            .any(|s| s.node == "n1" && s.name == "nbd.write" && s.attributes["volume"] == "tr"),
        "no sampled nbd.write span:\n{}",
        summary()
    );
    assert!(
        spans
            .iter()
            .all(|s| !(s.node == "n2" && s.name.starts_with("nbd.")))
    );
    assert!(
        spans.iter().all(|s| s.node != "n3"),
        "the agent without an endpoint exported spans:\n{}",
        summary()
    );
}
