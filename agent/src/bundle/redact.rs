//! Redaction: the cluster token and every credential stay out of the
//! bundle. Two layers, so one mistake does not leak:
//!
//! 1. *At the source* ([`Redactor::json`], [`is_secret_name`]): a JSON key,
//!    setting, label, flag or environment variable whose name looks like a
//!    credential has its value replaced by [`REDACTED`], and a URL's
//!    password (`scheme://user:pass@host`) is removed; each value so
//!    removed is remembered as a known secret.
//! 2. *Centrally* ([`Redactor::text`]), over every file just before it is
//!    written into the archive: every occurrence of a known secret (the
//!    cluster token first of all, wherever it appears — a log line, an
//!    error message, a metric label) is replaced, and so are `Bearer …`
//!    values and URL passwords.

use serde_json::Value;

/// What a removed value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Known secrets shorter than this are not searched for in text: a value
/// like `true` would wipe the bundle and is no credential anyway (it is
/// still replaced where it was found by name).
const MIN_SECRET_LEN: usize = 8;

/// Word parts that make a name a credential's (`VIGIL_CLUSTER_TOKEN`,
/// `api-key`, `db_password`, `OTEL_EXPORTER_OTLP_HEADERS`...).
const SECRET_WORDS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "apikey",
    "credential",
    "credentials",
    "auth",
    "authorization",
    "cookie",
    "headers",
    "private",
];

/// Settings marked secret (none of today's settings is: they are numbers,
/// booleans and choices). A setting is treated as secret when listed here
/// or when its name looks like a credential's ([`is_secret_name`]).
pub const SECRET_SETTINGS: &[&str] = &[];

/// Whether a name (setting, label, flag, environment variable, JSON key)
/// looks like a credential's: one of its `-`/`_`/`.`-separated words, or a
/// camelCase part, is a [`SECRET_WORDS`] entry, or `key` follows another
/// word (`api-key`, `ACCESS_KEY`; a lone `key` is a store key's name).
pub fn is_secret_name(name: &str) -> bool {
    if SECRET_SETTINGS.contains(&name) {
        return true;
    }
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            words.push(std::mem::take(&mut cur));
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower {
            words.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_ascii_lowercase();
        cur.push(c.to_ascii_lowercase());
    }
    words.push(cur);
    words.retain(|w| !w.is_empty());
    words.iter().any(|w| SECRET_WORDS.contains(&w.as_str()))
        || (words.len() > 1 && words.iter().skip(1).any(|w| w == "key"))
}

/// The secrets known so far and the two passes that remove them.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret containing another is replaced whole.
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor that knows `secrets` (the cluster token, ...).
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(secrets: I) -> Redactor {
        let mut r = Redactor::default();
        for s in secrets {
            r.learn(s.into());
        }
        r
    }

    /// Remembers one more secret value.
    pub fn learn(&mut self, secret: String) {
        let s = secret.trim().to_string();
        if s.len() < MIN_SECRET_LEN || s == REDACTED || self.secrets.contains(&s) {
            return;
        }
        self.secrets.push(s);
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// Merges another redactor's secrets.
    pub fn merge(&mut self, other: &Redactor) {
        for s in &other.secrets {
            self.learn(s.clone());
        }
    }

    /// The central pass over one file's text: known secrets, `Bearer`
    /// values and URL passwords replaced.
    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
        let out = redact_after(&out, "Bearer ", |c| {
            c.is_ascii_whitespace() || matches!(c, '"' | '\'' | ',' | '\\')
        });
        url_passwords(&out)
    }

    /// The central pass over one file of the archive. JSON (`.json`) and
    /// JSON lines (`.jsonl`) are redacted string by string, so the file
    /// stays valid JSON; anything else (or JSON that does not parse) as
    /// text.
    pub fn file(&self, path: &str, data: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(data);
        if path.ends_with(".json")
            && let Ok(v) = serde_json::from_str::<Value>(&text)
        {
            return serde_json::to_vec_pretty(&self.strings(v)).unwrap_or_default();
        }
        if path.ends_with(".jsonl") {
            let mut out = String::with_capacity(text.len());
            for line in text.lines() {
                match serde_json::from_str::<Value>(line) {
                    Ok(v) => out.push_str(&self.strings(v).to_string()),
                    Err(_) => out.push_str(&self.text(line)),
                }
                out.push('\n');
            }
            return out.into_bytes();
        }
        self.text(&text).into_bytes()
    }

    /// Every string (and object key) of a JSON value through
    /// [`Redactor::text`].
    fn strings(&self, v: Value) -> Value {
        match v {
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (self.text(&k), self.strings(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.into_iter().map(|v| self.strings(v)).collect()),
            Value::String(s) => Value::String(self.text(&s)),
            other => other,
        }
    }

    /// Structured redaction of a JSON value: the value of every key whose
    /// name looks like a credential's becomes [`REDACTED`] (and is learnt),
    /// and every string goes through [`Redactor::text`].
    pub fn json(&mut self, v: Value) -> Value {
        match v {
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| {
                        if is_secret_name(&k) && !is_empty(&v) {
                            self.learn_value(&v);
                            (k, Value::from(REDACTED))
                        } else {
                            let v = self.json(v);
                            (k, v)
                        }
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.into_iter().map(|v| self.json(v)).collect()),
            Value::String(s) => Value::String(self.text(&s)),
            other => other,
        }
    }

    /// A `NAME=value` pair (environment variable, flag): the value, or
    /// [`REDACTED`] when the name looks like a credential's (learnt).
    pub fn pair(&mut self, name: &str, value: &str) -> String {
        if is_secret_name(name) && !value.is_empty() {
            self.learn(value.to_string());
            REDACTED.to_string()
        } else {
            self.learn_url_password(value);
            self.text(value)
        }
    }

    fn learn_value(&mut self, v: &Value) {
        match v {
            Value::String(s) => self.learn(s.clone()),
            Value::Number(n) => self.learn(n.to_string()),
            Value::Array(a) => a.iter().for_each(|v| self.learn_value(v)),
            Value::Object(m) => m.values().for_each(|v| self.learn_value(v)),
            _ => {}
        }
    }

    /// Learns the password of a `scheme://user:pass@host` URL in `text`.
    fn learn_url_password(&mut self, text: &str) {
        let mut rest = text;
        while let Some(i) = rest.find("://") {
            rest = &rest[i + 3..];
            let authority = rest.split(['/', ' ', '"', '\'']).next().unwrap_or("");
            if let Some((userinfo, _)) = authority.rsplit_once('@')
                && let Some((_, pass)) = userinfo.split_once(':')
            {
                self.learn(pass.to_string());
            }
        }
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

/// Replaces what follows each `marker` up to a character `end` accepts.
fn redact_after(text: &str, marker: &str, end: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(marker) {
        out.push_str(&rest[..i + marker.len()]);
        rest = &rest[i + marker.len()..];
        let stop = rest.find(&end).unwrap_or(rest.len());
        if stop > 0 && &rest[..stop] != REDACTED {
            out.push_str(REDACTED);
        } else {
            out.push_str(&rest[..stop]);
        }
        rest = &rest[stop..];
    }
    out.push_str(rest);
    out
}

/// `scheme://user:pass@host` → `scheme://user:[REDACTED]@host`.
fn url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        let end = rest
            .find(|c: char| c == '/' || c.is_whitespace() || matches!(c, '"' | '\'' | '\\'))
            .unwrap_or(rest.len());
        let authority = &rest[..end];
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, pass)) if pass != REDACTED => {
                    out.push_str(&format!("{user}:{REDACTED}@{host}"));
                }
                _ => out.push_str(authority),
            },
            None => out.push_str(authority),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Whether an environment variable concerns vigil (and goes, redacted,
/// into the bundle): `VIGIL_*`, `OTEL_*`, `RUST_LOG`.
pub fn is_vigil_env(name: &str) -> bool {
    name.starts_with("VIGIL_") || name.starts_with("OTEL_") || name == "RUST_LOG"
}

/// Secrets this process knows without being told: the values of its
/// vigil environment variables whose names look like credentials'.
pub fn from_environment() -> Redactor {
    let mut r = Redactor::default();
    for (k, v) in std::env::vars() {
        if is_vigil_env(&k) && is_secret_name(&k) {
            r.learn(v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// How many secrets a redactor knows.
    fn count(r: &Redactor) -> usize {
        r.secrets.len()
    }

    #[test]
    fn names_that_look_like_credentials() {
        for n in [
            "VIGIL_CLUSTER_TOKEN",
            "api-key",
            "db_password",
            "clientSecret",
            "OTEL_EXPORTER_OTLP_HEADERS",
            "token",
            "backup-target-credential",
        ] {
            assert!(is_secret_name(n), "{n}");
        }
        for n in [
            "key",
            "VIGIL_NODE_NAME",
            "node-down-timeout",
            "keyboard",
            "monkey",
            "zone",
            "VIGIL_LOG",
        ] {
            assert!(!is_secret_name(n), "{n}");
        }
    }

    #[test]
    fn known_secrets_are_removed_from_any_text() {
        let r = Redactor::new(["s3cr3t-token-value", "short"]);
        assert_eq!(r.text("short"), "short", "too short to search for");
        let t =
            r.text("connect failed: token s3cr3t-token-value refused; again s3cr3t-token-value");
        assert!(!t.contains("s3cr3t"), "{t}");
        assert_eq!(t.matches(REDACTED).count(), 2);
    }

    #[test]
    fn bearer_values_and_url_passwords_are_removed() {
        let r = Redactor::default();
        let t = r.text(
            r#"{"h":"Authorization: Bearer abc.def-123","u":"http://bob:hunter22@h:4318/v1"}"#,
        );
        assert!(!t.contains("abc.def-123") && !t.contains("hunter22"), "{t}");
        assert!(t.contains("http://bob:[REDACTED]@h:4318/v1"), "{t}");
        assert_eq!(r.text("plain http://h:1/x text"), "plain http://h:1/x text");
    }

    #[test]
    fn json_keys_are_redacted_and_their_values_learnt_everywhere() {
        let mut r = Redactor::default();
        let v = r.json(json!({
            "key": "nodes/n1",
            "labels": {"zone": "a", "api-key": "k-123456"},
            "note": "the key is k-123456",
        }));
        assert_eq!(v["labels"]["api-key"], REDACTED);
        assert_eq!(v["key"], "nodes/n1");
        assert_eq!(v["labels"]["zone"], "a");
        // Learnt from the key: the central pass now removes it anywhere.
        assert!(!r.text("the key is k-123456").contains("k-123456"));
        assert_eq!(count(&r), 1);
    }

    #[test]
    fn pairs_and_url_passwords_are_learnt() {
        let mut r = Redactor::default();
        assert_eq!(r.pair("VIGIL_CLUSTER_TOKEN", "tok-abcdef"), REDACTED);
        assert_eq!(
            r.pair("--otlp-endpoint", "http://u:pw-987654@c:4318"),
            "http://u:[REDACTED]@c:4318"
        );
        let t = r.text("failed to export to pw-987654 with tok-abcdef");
        assert!(!t.contains("pw-987654") && !t.contains("tok-abcdef"), "{t}");
        // Short values are not searched for (they are no credential).
        r.learn("1".into());
        assert_eq!(r.text("1 2 3"), "1 2 3");
    }

    #[test]
    fn json_files_stay_json() {
        let r = Redactor::new(["tok-abcdef-123"]);
        let out = r.file(
            "a.json",
            br#"{"m":"token tok-abcdef-123 seen","n":[1,true]}"#,
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["m"], "token [REDACTED] seen");
        let out = r.file(
            "a.jsonl",
            b"{\"m\":\"tok-abcdef-123\"}\nnot json tok-abcdef-123\n",
        );
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("tok-abcdef"), "{text}");
        let out = r.file("m.prom", b"x{l=\"tok-abcdef-123\"} 1\n");
        assert!(!String::from_utf8(out).unwrap().contains("tok-abcdef"));
    }

    #[test]
    fn redaction_never_panics_on_odd_text() {
        let r = Redactor::new(["abcd"]);
        for t in [
            "",
            "://",
            "Bearer ",
            "x://@",
            "a://b:c@",
            "é://é:é@é",
            "Bearer \"x\"",
        ] {
            let _ = r.text(t);
        }
    }
}
