//! The catalogue against the document and against a real render.

use std::collections::BTreeSet;

use super::catalogue::{FAMILIES, Kind};
use super::scrape::Scrape;

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Rows of the catalogue tables in docs/metrics.md:
/// `| `name` | type | `a`, `b` | meaning |`.
fn doc_rows() -> Vec<(String, String, Vec<String>)> {
    doc()
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l
                .trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            let name = cells.first()?.strip_prefix('`')?.strip_suffix('`')?;
            if !name.starts_with("vigil_") || cells.len() < 4 {
                return None;
            }
            let labels = cells[2]
                .split(',')
                .map(|s| s.trim().trim_matches('`').to_string())
                .filter(|s| !s.is_empty() && s != "—" && s != "-")
                .collect();
            Some((name.to_string(), cells[1].to_string(), labels))
        })
        .collect()
}

#[test]
fn catalogue_names_are_unique_and_well_formed() {
    let mut seen = BTreeSet::new();
    for f in FAMILIES {
        assert!(seen.insert(f.name), "{} listed twice", f.name);
        assert!(f.name.starts_with("vigil_"), "{}", f.name);
        assert!(!f.help.is_empty(), "{} has no help", f.name);
        match f.kind {
            Kind::Counter => assert!(f.name.ends_with("_total"), "{}", f.name),
            _ => assert!(!f.name.ends_with("_total"), "{}", f.name),
        }
        if f.kind == Kind::Histogram {
            assert!(f.name.ends_with("_seconds"), "{}", f.name);
        }
    }
}

#[test]
fn document_and_catalogue_agree() {
    let rows = doc_rows();
    assert!(!rows.is_empty(), "docs/metrics.md has no catalogue rows");
    for f in FAMILIES {
        let row = rows.iter().find(|(n, _, _)| n == f.name);
        let Some((_, kind, labels)) = row else {
            panic!("{} is exported but not in docs/metrics.md", f.name);
        };
        assert_eq!(
            kind,
            f.kind.as_str(),
            "type of {} in docs/metrics.md",
            f.name
        );
        let want: Vec<String> = f.labels.iter().map(|s| s.to_string()).collect();
        assert_eq!(labels, &want, "labels of {} in docs/metrics.md", f.name);
    }
    for (name, _, _) in &rows {
        assert!(
            FAMILIES.iter().any(|f| f.name == name),
            "docs/metrics.md lists {name}, which the code does not export"
        );
    }
}

#[test]
fn scrape_renders_help_type_and_labels() {
    let page = Scrape::new();
    page.gauge(
        super::names::VOLUME_ROBUSTNESS,
        vec![("volume", "v1".into()), ("robustness", "degraded".into())],
        1.0,
    );
    page.counter(
        super::names::DISK_IO_ERRORS,
        vec![
            ("node", "n1".into()),
            ("disk", "d".into()),
            ("path", "/x".into()),
        ],
        7,
    );
    let text = page.render();
    assert!(text.contains("# HELP vigil_volume_robustness "), "{text}");
    assert!(
        text.contains("# TYPE vigil_volume_robustness gauge"),
        "{text}"
    );
    assert!(
        text.contains("vigil_volume_robustness{volume=\"v1\",robustness=\"degraded\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE vigil_disk_io_errors_total counter"),
        "{text}"
    );
    assert!(text.contains("} 7"), "{text}");
}
