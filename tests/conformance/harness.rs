//! The conformance machinery: run a scenario's requests against one target, normalise the
//! answers (ids, timestamps, organizations masked), and compare two transcripts.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// How a step authenticates.
#[derive(Clone, Copy, Debug)]
pub enum Auth {
    None,
    UserKey,
    Bearer,
    /// `Authorization: bearer <key>` (lowercase scheme).
    LowercaseBearer,
    /// `Authorization: <key>` with no scheme.
    Raw,
    /// A separate `UserKey: <key>` header.
    UserKeyHeader,
    /// `Authorization: Bearer garbage`.
    Garbage,
    /// A JWT with an organization but neither `email` nor `scopes`.
    NoEmailClaim,
    /// A valid key of another organization.
    OtherOrg,
    /// A key with a `token_id` claim, as the SDK's keys carry (the server's `created_by`).
    TokenId,
    /// `Authorization: Token <key>` (unknown scheme) plus a valid `UserKey:` header.
    UnknownSchemeAndUserKeyHeader,
}

/// One request. `path` may hold `{NAME}`, replaced by the id saved under NAME by an earlier step.
#[derive(Clone, Debug)]
pub struct Step {
    pub method: &'static str,
    pub path: String,
    pub auth: Auth,
    pub body: Option<String>,
    /// Save the answer's `id` (or its first element's) under this name.
    pub save: Option<&'static str>,
    /// Poll (GET, same path) until the answer's `status` is no longer `provisioning`.
    pub settle: bool,
}

pub fn step(method: &'static str, path: &str) -> Step {
    Step { method, path: path.to_owned(), auth: Auth::UserKey, body: None, save: None, settle: false }
}

impl Step {
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }
    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body.to_string());
        self
    }
    pub fn raw(mut self, body: &str) -> Self {
        self.body = Some(body.to_owned());
        self
    }
    pub fn save(mut self, name: &'static str) -> Self {
        self.save = Some(name);
        self
    }
    pub fn settle(mut self) -> Self {
        self.settle = true;
        self
    }
}

pub struct Scenario {
    pub name: &'static str,
    pub steps: Vec<Step>,
}

/// What one step got back, normalised.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Answer {
    pub request: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub body: Value,
}

/// A target server and how to mint keys for it.
pub struct Target {
    pub base_url: String,
    /// Distinguishes this run's organizations from earlier runs' on a long-lived server.
    pub run_id: String,
}

/// Runs a scenario on `target` with a fresh organization; returns the normalised transcript.
pub async fn run(target: &Target, scenario: &Scenario) -> Vec<Answer> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    let org = format!("conf-{}-{}", scenario.name, target.run_id);
    let other = format!("{org}-other");
    let key = kubiya_cp_emulator::token(&org);
    let mut saved: HashMap<&str, String> = HashMap::new();
    let mut masks = Masks::new(&org, &other);
    let mut out = Vec::new();
    for s in &scenario.steps {
        let mut path = s.path.clone();
        // `{NAME}` is the saved id; `{NAME|upper}` and `{NAME|simple}` are the forms PostgreSQL
        // also reads (upper case, no hyphens).
        for (name, id) in &saved {
            path = path
                .replace(&format!("{{{name}}}"), id)
                .replace(&format!("{{{name}|upper}}"), &id.to_uppercase())
                .replace(&format!("{{{name}|simple}}"), &id.replace('-', ""));
        }
        let url = format!("{}{}", target.base_url, path);
        let send = || {
            let mut req = http.request(s.method.parse().expect("method"), &url);
            req = match s.auth {
                Auth::None => req,
                Auth::UserKey => req.header("Authorization", format!("UserKey {key}")),
                Auth::Bearer => req.header("Authorization", format!("Bearer {key}")),
                Auth::LowercaseBearer => req.header("Authorization", format!("bearer {key}")),
                Auth::Raw => req.header("Authorization", key.clone()),
                Auth::UserKeyHeader => req.header("UserKey", key.clone()),
                Auth::Garbage => req.header("Authorization", "Bearer garbage"),
                Auth::NoEmailClaim => req.header(
                    "Authorization",
                    format!(
                        "Bearer {}",
                        kubiya_cp_emulator::token_with_claims(&json!({"organization": org}))
                    ),
                ),
                Auth::OtherOrg => {
                    req.header("Authorization", format!("Bearer {}", kubiya_cp_emulator::token(&other)))
                }
                Auth::TokenId => req.header(
                    "Authorization",
                    format!(
                        "Bearer {}",
                        kubiya_cp_emulator::token_with_claims(&json!({"organization": org,
                            "email": "ops@example.test", "token_id": "0b9f3c1e-6a0e-5b7e-9d51-3f1a2b4c5d6e"}))
                    ),
                ),
                Auth::UnknownSchemeAndUserKeyHeader => {
                    req.header("Authorization", format!("Token {key}")).header("UserKey", key.clone())
                }
            };
            if let Some(b) = &s.body {
                req = req.header("Content-Type", "application/json").body(b.clone());
            }
            req.send()
        };
        let mut resp = send().await.unwrap_or_else(|e| panic!("{} {url}: {e}", s.method));
        let mut status = resp.status().as_u16();
        let mut location = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut text = resp.text().await.unwrap_or_default();
        if s.settle {
            for _ in 0..100 {
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if v["status"] != "provisioning" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                resp = send().await.expect("poll");
                status = resp.status().as_u16();
                location = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
                text = resp.text().await.unwrap_or_default();
            }
        }
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        // The id of the object answered, or of the first one of a list.
        let id = body.get("id").or_else(|| body.get(0).and_then(|e| e.get("id"))).and_then(Value::as_str);
        if let (Some(name), Some(id)) = (s.save, id) {
            saved.insert(name, id.to_owned());
        }
        let body = if status >= 500 { first_line_of_detail(body) } else { body };
        out.push(Answer {
            request: masks.text(&format!("{} {}", s.method, path)),
            status,
            location: location.map(|l| masks.text(&strip_origin(&l, &target.base_url))),
            body: masks.value(body),
        });
    }
    out
}

/// The server follows a database error's first line with the SQL statement, its parameters and
/// timestamps; only the first line is part of the contract.
fn first_line_of_detail(mut body: Value) -> Value {
    if let Some(Value::String(d)) = body.get_mut("detail")
        && let Some((first, _)) = d.split_once('\n')
    {
        *d = first.to_owned();
    }
    body
}

fn strip_origin(location: &str, base: &str) -> String {
    location.strip_prefix(base).unwrap_or(location).to_owned()
}

/// Consistent masks: the n-th distinct UUID becomes `<uuid-n>`, timestamps `<time>`, the
/// organizations `<org>` and `<other-org>`. The forms PostgreSQL also reads keep the id's mask
/// and say which form they are: `<uuid-n|upper>` (upper case), `<uuid-n|simple>` (no hyphens).
struct Masks {
    uuids: HashMap<String, String>,
    org: String,
    other: String,
}

impl Masks {
    fn new(org: &str, other: &str) -> Self {
        Masks { uuids: HashMap::new(), org: org.to_owned(), other: other.to_owned() }
    }

    fn mask(&mut self, canonical: String) -> String {
        let n = self.uuids.len() + 1;
        self.uuids.entry(canonical).or_insert_with(|| format!("<uuid-{n}")).clone()
    }

    fn text(&mut self, s: &str) -> String {
        let mut out = s.replace(&self.other, "<other-org>").replace(&self.org, "<org>");
        // UUIDs anywhere in the text (paths, SQL details, commands).
        let mut i = 0;
        while i < out.len() {
            let rest = &out[i..];
            let alnum_at = |j: usize| out.as_bytes().get(j).is_some_and(u8::is_ascii_alphanumeric);
            let found = if let Some(c) = rest.get(..36).filter(|c| is_uuid(c)) {
                let form = if c.bytes().any(|b| b.is_ascii_uppercase()) { "|upper" } else { "" };
                Some((36, c.to_ascii_lowercase(), form))
            } else if let Some(c) = rest.get(..32).filter(|c| c.bytes().all(|b| b.is_ascii_hexdigit()))
                && (i == 0 || !alnum_at(i - 1))
                && !alnum_at(i + 32)
            {
                let c = c.to_ascii_lowercase();
                Some((
                    32,
                    format!("{}-{}-{}-{}-{}", &c[..8], &c[8..12], &c[12..16], &c[16..20], &c[20..]),
                    "|simple",
                ))
            } else {
                None
            };
            match found {
                Some((len, canonical, form)) => {
                    let mask = format!("{}{form}>", self.mask(canonical));
                    out.replace_range(i..i + len, &mask);
                    i += mask.len();
                }
                None => i += rest.chars().next().map_or(1, char::len_utf8),
            }
        }
        if is_timestamp(&out) { "<time>".to_owned() } else { out }
    }

    fn value(&mut self, v: Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.text(&s)),
            Value::Array(a) => Value::Array(a.into_iter().map(|x| self.value(x)).collect()),
            Value::Object(o) => {
                Value::Object(o.into_iter().map(|(k, x)| (k, self.value(x))).collect::<Map<_, _>>())
            }
            other => other,
        }
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(
            |(i, c)| {
                if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() }
            },
        )
}

/// `2026-11-28T21:30:00.123456+00:00` and the like.
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() >= 19
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b' ')
        && b[13] == b':'
        && b[16] == b':'
        && s[..4].bytes().all(|c| c.is_ascii_digit())
}

/// Differences between two transcripts of the same scenario, one readable line each.
pub fn diff(
    scenario: &str,
    left_name: &str,
    left: &[Answer],
    right_name: &str,
    right: &[Answer],
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, (l, r)) in left.iter().zip(right).enumerate() {
        let at = format!("{scenario} step {} ({})", i + 1, l.request);
        if l.status != r.status {
            out.push(format!("{at}: status {left_name} {} vs {right_name} {}", l.status, r.status));
        }
        if l.location != r.location {
            out.push(format!("{at}: Location {left_name} {:?} vs {right_name} {:?}", l.location, r.location));
        }
        json_diff(&l.body, &r.body, "body", &mut |path, a, b| {
            out.push(format!("{at}: {path}: {left_name} {a} vs {right_name} {b}"));
        });
    }
    if left.len() != right.len() {
        out.push(format!("{scenario}: {} steps vs {}", left.len(), right.len()));
    }
    out
}

fn json_diff(a: &Value, b: &Value, path: &str, report: &mut dyn FnMut(&str, String, String)) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(v), Some(w)) => json_diff(v, w, &p, report),
                    (v, w) => report(&p, show(v), show(w)),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                json_diff(v, w, &format!("{path}[{i}]"), report);
            }
        }
        _ if a != b => report(path, a.to_string(), b.to_string()),
        _ => {}
    }
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "(absent)".to_owned(), Value::to_string)
}
