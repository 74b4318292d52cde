//! `docs/health-checks.md` and the registry agree: one `## CODE` section
//! per code, no section for an unknown code, and each section's
//! `Severity:` line matches.

use std::collections::BTreeMap;

use super::codes;

const DOC: &str = include_str!("../../../../docs/health-checks.md");

/// `code → severity line` of every `## CODE` section.
fn sections(doc: &str) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            let h = h.trim();
            let is_code = !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit());
            current = is_code.then(|| h.to_string());
            if let Some(c) = &current {
                assert!(out.insert(c.clone(), None).is_none(), "## {c} twice");
            }
        } else if let Some(c) = &current
            && let Some(sev) = line.strip_prefix("**Severity:**")
            && out.get(c).is_some_and(Option::is_none)
        {
            out.insert(c.clone(), Some(sev.trim().to_string()));
        }
    }
    out
}

#[test]
fn every_code_has_a_section_with_its_severity_and_no_section_is_unknown() {
    let doc = sections(DOC);
    for c in codes::all() {
        match doc.get(c.code) {
            None => panic!("docs/health-checks.md has no `## {}` section", c.code),
            Some(None) => panic!("## {} has no `**Severity:** ...` line", c.code),
            Some(Some(s)) => assert_eq!(
                s,
                c.severity.as_str(),
                "## {}: the document says {s:?}, the code {:?}",
                c.code,
                c.severity.as_str()
            ),
        }
    }
    for name in doc.keys() {
        assert!(
            codes::info(name).is_some(),
            "docs/health-checks.md documents `{name}`, which is not a code"
        );
    }
}

#[test]
fn the_checker_notices_disagreement() {
    let doc = sections("## NODE_DOWN\n**Severity:** warning\n## NOT_A_CODE\n## Causality\n");
    assert_eq!(doc.get("NODE_DOWN"), Some(&Some("warning".to_string())));
    assert!(doc.contains_key("NOT_A_CODE"));
    assert!(!doc.contains_key("Causality"));
}
