//! Errors of control-plane calls, classified retryable vs terminal. Messages never carry the API
//! key or a worker token: requests are described by method and route, bodies only by `detail`.

use std::time::Duration;

/// Longest `detail` quoted from a server answer: enough to act on, short enough that a SQL
/// statement or stack trace leaking from the server does not flood status and Events.
pub const MAX_DETAIL: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request did not complete: connection refused, reset, TLS, or the timeout.
    #[error("{method} {route}: control plane unreachable")]
    Transport {
        method: &'static str,
        route: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// The control plane answered with an error status.
    #[error("{method} {route}: control plane answered {status}: {detail}")]
    Api {
        method: &'static str,
        route: &'static str,
        status: u16,
        detail: String,
        retry_after: Option<Duration>,
    },
    /// The control plane answered success with a body that is not what the API promises.
    #[error("{method} {route}: unexpected response body")]
    Decode {
        method: &'static str,
        route: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The control plane (or something in front of it) redirected: never followed, so that a
    /// request body (env vars, settings) and the API key never go to another host.
    #[error(
        "{method} {route}: control plane answered {status}, a redirect to {target}: set the control-plane URL to where it points, if that is right"
    )]
    Redirect { method: &'static str, route: &'static str, status: u16, target: String },
    /// Recent requests got no answer: not sent, to be tried again in a few seconds.
    #[error(
        "{method} {route}: control plane unreachable (the last requests got no answer; trying again shortly)"
    )]
    Down { method: &'static str, route: &'static str },
    /// Every request slot of this connection stayed taken for a whole request timeout.
    #[error("{method} {route}: control plane busy (no request slot came free in time)")]
    Busy { method: &'static str, route: &'static str },
    /// The answer's body is larger than the client accepts.
    #[error("{method} {route}: the answer is larger than {limit} bytes")]
    TooLarge { method: &'static str, route: &'static str, limit: usize },
    /// The answers being read at once, over every connection, would have held more than the
    /// operator allows them (a control plane answering near the largest size to every call).
    #[error(
        "{method} {route}: answers of the control plane in flight would pass the operator's budget of {limit} bytes: not read; trying again shortly"
    )]
    OverBudget { method: &'static str, route: &'static str, limit: usize },
}

impl Error {
    /// An error answer; `detail` is the server's text, made fit to show by [`sanitize`] (the
    /// status's reason phrase when nothing is left of it).
    pub(crate) fn api(
        method: &'static str,
        route: &'static str,
        status: u16,
        detail: String,
        retry_after: Option<Duration>,
    ) -> Self {
        let mut detail = sanitize(&detail);
        if detail.is_empty() {
            let reason = reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason());
            detail = reason.unwrap_or("error").to_owned();
        }
        Error::Api { method, route, status, detail, retry_after }
    }

    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    /// Whether trying again later can succeed without anyone changing anything: transport
    /// failures, timeouts, 408, 429 and 5xx. Everything else needs a human (bad key, bad spec),
    /// including the 500s the server answers for database constraint violations (a rename onto
    /// a taken name, an invalid status), which fail the same way every time.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport { .. }
            | Error::Decode { .. }
            | Error::Down { .. }
            | Error::Busy { .. }
            | Error::OverBudget { .. } => true,
            Error::Redirect { .. } | Error::TooLarge { .. } => false,
            Error::Api { status, detail, .. } => {
                matches!(status, 408 | 429 | 500..=599) && !(*status == 500 && is_database_rejection(detail))
            }
        }
    }

    /// What the server asked us to wait (`Retry-After` on 429/503).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Text from the server made fit for status, Events and logs: its first line only (the server
/// follows a database error with the SQL statement, its parameters and the failing row, which
/// holds the worker token in plain text), anything token-shaped replaced by `<redacted>`, and at
/// most [`MAX_DETAIL`] bytes.
pub fn sanitize(text: &str) -> String {
    let mut lines = text.split(['\n', '\r', '\u{2028}', '\u{2029}']).map(str::trim);
    let line = lines.find(|l| !l.is_empty()).unwrap_or_default();
    let mut out = String::with_capacity(line.len());
    let mut word = String::new();
    for c in line.chars().chain(std::iter::once(' ')) {
        let c = if c.is_control() { ' ' } else { c };
        if is_token_char(c) {
            word.push(c);
            continue;
        }
        out.push_str(if is_token_shaped(&word) { "<redacted>" } else { &word });
        word.clear();
        out.push(c);
    }
    // Control characters became spaces: trim again, so a line of nothing else reads as empty.
    let mut out = out.trim().to_owned();
    if crate::truncate_at_char_boundary(&mut out, MAX_DETAIL) {
        out.push('…');
    }
    out
}

/// Characters of API keys (JWTs: base64url, with dots between parts, each part checked alone),
/// worker tokens (UUIDs) and base64 secrets.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '=')
}

/// Long runs of letters and digits mixed (UUIDs, JWT parts, keys), and anything starting like a
/// JWT. Words, paths and SQL identifiers are shorter or lack one of the two.
fn is_token_shaped(word: &str) -> bool {
    let mixed = word.chars().any(|c| c.is_ascii_digit()) && word.chars().any(|c| c.is_ascii_alphabetic());
    (word.len() >= 20 && mixed) || (word.len() >= 16 && word.starts_with("eyJ"))
}

/// `Failed to update environment: (psycopg2.errors.UniqueViolation) duplicate key value ...`:
/// a deterministic refusal by the database, unlike a lost connection (`OperationalError`).
fn is_database_rejection(detail: &str) -> bool {
    detail.contains("(psycopg2.errors.") && !detail.contains("OperationalError")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let e = |s| Error::api("GET", "/x", s, String::new(), None);
        for s in [408, 429, 500, 502, 503] {
            assert!(e(s).is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422] {
            assert!(!e(s).is_retryable(), "{s}");
        }
        assert!(e(404).is_not_found());
        assert!(e(409).is_conflict());
        for s in [400, 401, 403, 409, 422, 500] {
            assert!(!e(s).is_not_found(), "{s}");
        }
        for s in [400, 401, 403, 404, 422, 500] {
            assert!(!e(s).is_conflict(), "{s}");
        }
    }

    #[test]
    fn database_rejections_are_permanent_and_their_sql_is_dropped() {
        let detail = "Failed to update environment: (psycopg2.errors.NotNullViolation) null value in column \"name\"\n\
            DETAIL:  Failing row contains (id, org, null, 3f1c-worker-token)\n[SQL: UPDATE environments SET name=...]";
        let e = Error::api("PATCH", "/x", 500, detail.into(), None);
        assert!(!e.is_retryable());
        let text = e.to_string();
        assert!(text.ends_with("null value in column \"name\""), "{text}");
        assert!(!text.contains("worker-token") && !text.contains("SQL"), "{text}");
        let lost =
            Error::api("GET", "/x", 500, "(psycopg2.errors.OperationalError) server closed".into(), None);
        assert!(lost.is_retryable());
        assert!(Error::api("GET", "/x", 500, "Internal Server Error".into(), None).is_retryable());
    }

    #[test]
    fn tokens_are_redacted_and_words_are_kept() {
        let jwt =
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJvcmdhbml6YXRpb24iOiJhY21lIn0.c2lnbmF0dXJlMTIzNDU2Nzg5";
        let text = format!(
            "Failed (psycopg2.errors.UniqueViolation) for 3f1c2d4e-5b6a-4c7d-8e9f-0a1b2c3d4e5f with key {jwt}, \
             name=prod-eu-west-1 at /api/v1/environments"
        );
        let clean = sanitize(&text);
        assert_eq!(
            clean,
            "Failed (psycopg2.errors.UniqueViolation) for <redacted> with key <redacted>.<redacted>.<redacted>, \
             name=prod-eu-west-1 at /api/v1/environments"
        );
        assert_eq!(sanitize("  first line \nsecond"), "first line");
        assert_eq!(sanitize("\n\n  after blank lines \nsecond"), "after blank lines");
        assert_eq!(sanitize("key eyJhbGciOiJIUzI1NiJ9abc"), "key <redacted>");
        // Long words of letters only, or digits only, are words; a JWT start is a token from 16.
        assert_eq!(
            sanitize("internationalization 12345678901234567890"),
            "internationalization 12345678901234567890"
        );
        assert_eq!(sanitize("jwt eyJhbGciOiJIUzI1 eyJhbGciOiJIUzI"), "jwt <redacted> eyJhbGciOiJIUzI");
        for separator in ["\r", "\u{2028}", "\u{2029}", "\r\n"] {
            assert_eq!(sanitize(&format!("one{separator}two")), "one", "{separator:?}");
        }
        assert_eq!(sanitize("tab\there\u{1b}[31m"), "tab here [31m");
        assert_eq!(sanitize(""), "");
        // Nothing but control characters is nothing: the status reason is quoted instead.
        assert_eq!(sanitize("\u{e}\u{0}"), "");
        let Error::Api { detail, .. } = Error::api("GET", "/x", 400, "\u{e}\u{0}".into(), None) else {
            unreachable!()
        };
        assert_eq!(detail, "Bad Request");
    }

    #[test]
    fn long_details_are_cut_on_a_char_boundary() {
        let e = Error::api("PATCH", "/x", 500, "é".repeat(400), None);
        let Error::Api { detail, .. } = e else { unreachable!() };
        assert!(detail.len() <= MAX_DETAIL + '…'.len_utf8());
        assert!(detail.ends_with('…'));
    }
}
