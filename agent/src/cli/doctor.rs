//! `vigil doctor` (root causes first, each with cause, fix and the
//! consequences under it; the exit code says how bad) and `vigil health
//! list|mute|unmute`.

use std::collections::BTreeSet;
use std::process::ExitCode;

use serde_json::Value;

use super::Render;
use super::args::{HealthCmd, Output};
use super::table::{columns, s};
use vigil_client::{ApiClient, CallError};
use vigil_control::health::{Check, Item, ItemRef, MuteRequest, Report, Status, codes};

/// `vigil doctor`: 0 healthy, 1 warnings only, 2 any error (muted checks
/// do not count) or the agent could not be asked.
pub async fn doctor(endpoint: &str, output: Output) -> ExitCode {
    let api = ApiClient::new(endpoint);
    let report: Report = match api.health().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let code = print(&report, output);
    if output == Output::Table {
        // The kernel's view next to the engine's (eBPF); best effort.
        if let Ok(nodes) = api.nodes().await {
            print!("{}", super::kernel_view::section(&super::json(nodes)));
        }
    }
    code
}

/// Prints a report (live or from a support bundle) and returns the
/// doctor's exit code for it.
pub fn print(report: &Report, output: Output) -> ExitCode {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        ),
        Output::Table => print!("{}", render(report)),
    }
    ExitCode::from(match report.status {
        Status::Ok => 0,
        Status::Warning => 1,
        Status::Error => 2,
    })
}

/// A mute's length ([`super::duration::parse`]) in whole seconds, at
/// least one.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    match super::duration::parse(text)?.as_secs() {
        0 => Err(format!(
            "duration {text:?} is under 1s; mute for at least 1s"
        )),
        n => Ok(n),
    }
}

/// `vigil health ...`: one API call each.
pub async fn health(api: &ApiClient, cmd: HealthCmd) -> Result<(Value, Render), CallError> {
    Ok(match cmd {
        HealthCmd::List => (api.health().await?, list),
        HealthCmd::Mute {
            code,
            duration,
            reason,
        } => (
            api.mute(&MuteRequest {
                code,
                for_seconds: duration,
                reason,
            })
            .await?,
            muted,
        ),
        HealthCmd::Unmute { code } => (api.unmute(&code).await?, unmuted),
    })
}

fn list(v: &Value) -> String {
    let Ok(report) = serde_json::from_value::<Report>(v.clone()) else {
        return format!("{v}\n");
    };
    if report.checks.is_empty() {
        return "no failing checks\n".into();
    }
    let rows = report
        .checks
        .iter()
        .map(|c| {
            vec![
                c.severity.as_str().to_string(),
                c.code.clone(),
                if c.root { "root" } else { "-" }.to_string(),
                c.items.len().to_string(),
                c.muted.as_ref().map_or("-".into(), |m| {
                    format!("until {}", vigil_model::time::utc_seconds(m.until_unix))
                }),
                c.summary.clone(),
            ]
        })
        .collect();
    columns(
        &["SEVERITY", "CODE", "ROOT", "ITEMS", "MUTED", "SUMMARY"],
        rows,
    )
}

fn muted(v: &Value) -> String {
    format!(
        "{} muted until {}: {}\n",
        s(&v["code"]),
        v["until_unix"]
            .as_u64()
            .map_or("-".into(), vigil_model::time::utc_seconds),
        s(&v["reason"])
    )
}

fn unmuted(v: &Value) -> String {
    format!("{} unmuted\n", s(&v["code"]))
}

/// The doctor's human report.
pub fn render(report: &Report) -> String {
    let roots: Vec<&Check> = report
        .checks
        .iter()
        .filter(|c| c.root && c.muted.is_none())
        .collect();
    let muted: Vec<&Check> = report.checks.iter().filter(|c| c.muted.is_some()).collect();
    let mut out = format!(
        "HEALTH_{}: {} root cause(s); {} check(s) failing, {} muted\n",
        report.status.as_str().to_uppercase(),
        roots.len(),
        report.checks.len() - muted.len(),
        muted.len()
    );
    for c in roots {
        out.push_str(&format!(
            "\n[{}] {}: {}\n  cause: {}\n  fix:   {}\n",
            c.severity.as_str(),
            c.code,
            c.summary,
            c.cause,
            c.fix
        ));
        for i in c.items.iter().filter(|i| report.is_root_item(i)) {
            out.push_str(&format!("  * {}: {}\n", i.object, i.message));
            let mut seen = BTreeSet::new();
            consequences(
                report,
                &ItemRef::new(&c.code, &i.object),
                1,
                &mut seen,
                &mut out,
            );
        }
    }
    if !report.mutes.is_empty() {
        out.push_str("\nMuted:\n");
    }
    for m in &report.mutes {
        if report.check(&m.code).is_none() {
            out.push_str(&format!(
                "{} (muted until {} by {}: {}; not failing now)\n",
                m.code,
                vigil_model::time::utc_seconds(m.until_unix),
                m.created_by,
                m.reason
            ));
        }
    }
    for c in muted {
        let m = c.muted.as_ref().map_or_else(String::new, |m| {
            format!(
                " until {} by {}: {}",
                vigil_model::time::utc_seconds(m.until_unix),
                m.created_by,
                m.reason
            )
        });
        out.push_str(&format!(
            "[{}] {} (muted{m})\n",
            c.severity.as_str(),
            c.code
        ));
        for i in &c.items {
            out.push_str(&format!("  * {}: {}\n", i.object, i.message));
        }
    }
    out
}

/// Appends, indented under `cause`, every item it causes (transitively).
fn consequences(
    report: &Report,
    cause: &ItemRef,
    depth: usize,
    seen: &mut BTreeSet<ItemRef>,
    out: &mut String,
) {
    for (code, item) in report.consequences_of(cause) {
        let key = ItemRef::new(code, &item.object);
        if !seen.insert(key.clone()) {
            continue;
        }
        out.push_str(&consequence_line(report, code, item, depth));
        consequences(report, &key, depth + 1, seen, out);
    }
}

fn consequence_line(report: &Report, code: &str, item: &Item, depth: usize) -> String {
    let muted = if report.check(code).is_some_and(|c| c.muted.is_some()) {
        " (muted)"
    } else {
        ""
    };
    let severity = codes::info(code).map_or("?", |c| c.severity.as_str());
    format!(
        "{:indent$}-> {code}{muted} [{severity}] {}: {}\n",
        "",
        item.object,
        item.message,
        indent = 2 + 4 * depth
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(30));
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert_eq!(parse_duration("45"), Ok(45));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("1.5h"), Ok(5400));
        for bad in ["", "h", "1y", "-1h", "0s", "0.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    fn item(object: &str, caused_by: &[(&str, &str)]) -> Item {
        Item {
            object: object.into(),
            message: format!("{object} is bad"),
            caused_by: caused_by.iter().map(|(c, o)| ItemRef::new(c, *o)).collect(),
        }
    }

    fn check(code: &str, items: Vec<Item>) -> Check {
        let info = codes::info(code).unwrap();
        Check {
            code: code.into(),
            severity: info.severity,
            summary: info.summary.into(),
            cause: info.cause.into(),
            fix: info.fix.into(),
            items,
            root: false,
            muted: None,
        }
    }

    #[test]
    fn roots_first_with_consequences_indented_under_them() {
        let mut report = Report {
            status: Status::Ok,
            checks: vec![
                check(codes::NODE_DOWN, vec![item("node/n2", &[])]),
                check(
                    codes::REPLICA_ERROR,
                    vec![item("replica/r2", &[(codes::NODE_DOWN, "node/n2")])],
                ),
                check(
                    codes::VOLUME_DEGRADED,
                    vec![item("volume/v1", &[(codes::REPLICA_ERROR, "replica/r2")])],
                ),
            ],
            mutes: vec![],
            evaluated_unix: 0,
        };
        report.settle();
        let text = render(&report);
        assert!(text.starts_with("HEALTH_ERROR: 1 root cause(s)"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        let at = |needle: &str| {
            lines
                .iter()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("{needle} not in:\n{text}"))
        };
        assert!(at("[error] NODE_DOWN") < at("  cause:"));
        assert!(at("  * node/n2") < at("      -> REPLICA_ERROR [warning] replica/r2"));
        assert!(
            at("-> REPLICA_ERROR") < at("          -> VOLUME_DEGRADED [warning] volume/v1"),
            "{text}"
        );
        assert_eq!(
            text.matches("REPLICA_ERROR").count(),
            1,
            "not repeated as a root:\n{text}"
        );
    }
}
