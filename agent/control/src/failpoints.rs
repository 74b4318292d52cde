//! Named fault-injection points for tests of multi-step flows (a live
//! migration's steps), set with the environment variable
//! `VIGIL_FAILPOINTS=name=action[,name=action…]` when the agent starts:
//!
//! A point may be limited to one object with `name@object` (e.g.
//! `migration.target.switch@v3=error`), so one agent can hold different
//! faults for different volumes.
//!
//! * `error`       — the step fails with an injected I/O error;
//! * `delay:MS`    — the step waits MS milliseconds first (so a test can
//!   kill or freeze an agent while it is at that step).
//!
//! Unset (the default) every point costs one map lookup in a flow that is
//! rare anyway; nothing on the data path has a failpoint. Each firing is a
//! `warn` log line naming the point.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Error,
    Delay(Duration),
}

fn points() -> &'static BTreeMap<String, Action> {
    static POINTS: OnceLock<BTreeMap<String, Action>> = OnceLock::new();
    POINTS.get_or_init(|| parse(&std::env::var("VIGIL_FAILPOINTS").unwrap_or_default()))
}

fn parse(spec: &str) -> BTreeMap<String, Action> {
    let mut out = BTreeMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((name, action)) = item.split_once('=') else {
            tracing::warn!(item, "VIGIL_FAILPOINTS: expected name=action; ignored");
            continue;
        };
        let action = match action.split_once(':') {
            None if action == "error" => Action::Error,
            Some(("delay", ms)) => match ms.parse::<u64>() {
                Ok(ms) => Action::Delay(Duration::from_millis(ms)),
                Err(_) => {
                    tracing::warn!(item, "VIGIL_FAILPOINTS: bad delay; ignored");
                    continue;
                }
            },
            _ => {
                tracing::warn!(item, "VIGIL_FAILPOINTS: unknown action; ignored");
                continue;
            }
        };
        out.insert(name.to_string(), action);
    }
    out
}

/// Passes through point `name` for `object`: `Err` with a message when an
/// error is injected there, after a delay when one is.
pub async fn hit(name: &str, object: &str) -> Result<(), String> {
    let p = points();
    if p.is_empty() {
        return Ok(());
    }
    match p.get(&format!("{name}@{object}")).or_else(|| p.get(name)) {
        None => Ok(()),
        Some(Action::Error) => {
            tracing::warn!(
                failpoint = name,
                object,
                "failpoint: injecting an I/O error"
            );
            Err(format!("I/O error injected at failpoint {name}"))
        }
        Some(Action::Delay(d)) => {
            tracing::warn!(
                failpoint = name,
                delay_ms = d.as_millis() as u64,
                "failpoint: delaying"
            );
            tokio::time::sleep(*d).await;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_actions_and_ignores_garbage() {
        let p = parse("a=error, b@v2=delay:250,c,d=delay:x,e=explode");
        assert_eq!(p.get("a"), Some(&Action::Error));
        assert_eq!(
            p.get("b@v2"),
            Some(&Action::Delay(Duration::from_millis(250)))
        );
        assert_eq!(p.len(), 2);
        assert!(parse("").is_empty());
    }
}
