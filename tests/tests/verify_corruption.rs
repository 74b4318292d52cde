//! A byte flipped in a snapshot file is found by verify, with the file named.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::io::{Read, Seek, SeekFrom, Write};

use vigil_tests::{Agent, tools};

#[test]
fn verify_names_the_corrupted_snapshot_file() {
    let root = tempfile::tempdir().unwrap();
    let a = Agent::start(root.path(), "n1");
    let r = a.create_replica("v-r1", "8MiB");
    let e = a.create_engine("v", "8MiB", &[&r]);
    tools::run(
        "qemu-io",
        &[
            "-f",
            "raw",
            e["nbd_uri"].as_str().unwrap(),
            "-c",
            "write -P 0x77 0 1M",
        ],
    );
    a.json(&["snapshot", "create", "v", "s1"]);
    let clean = a.json(&["replica", "verify", "v-r1"]);
    assert_eq!(clean["ok"], true, "{clean}");

    let shown = a.json(&["replica", "show", "v-r1"]);
    let dir = std::path::PathBuf::from(shown["dir"].as_str().unwrap());
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name().unwrap().to_str().unwrap().contains("snap-s1")
                && p.extension().is_some_and(|x| x == "img")
        })
        .expect("snapshot file for s1");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .unwrap();
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(4096 + 17)).unwrap();
    f.read_exact(&mut byte).unwrap();
    byte[0] ^= 0x01;
    f.seek(SeekFrom::Start(4096 + 17)).unwrap();
    f.write_all(&byte).unwrap();
    f.sync_all().unwrap();

    let (ok, out, _) = a.cli(&["-o", "json", "replica", "verify", "v-r1"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false, "{v}");
    let problem = &v["problems"][0];
    assert_eq!(problem["kind"], "checksum", "{v}");
    assert_eq!(problem["layer"], "s1", "{v}");
    assert_eq!(problem["file"].as_str().unwrap(), file.to_str().unwrap());
}
