//! Errors of control-plane calls, classified retryable vs terminal. Messages never carry the API
//! key or a worker token: requests are described by method and route, bodies only by `detail`.

use std::time::Duration;

/// Longest `detail` quoted from a server answer: enough to act on, short enough that a SQL
/// statement or stack trace leaking from the server does not flood status and Events.
const MAX_DETAIL: usize = 300;

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
}

impl Error {
    pub(crate) fn api(
        method: &'static str,
        route: &'static str,
        status: u16,
        detail: String,
        retry_after: Option<Duration>,
    ) -> Self {
        // Only the first line: the server follows a database error with the SQL statement, its
        // parameters and the failing row, which holds the worker token in plain text.
        let mut detail = detail.lines().next().unwrap_or_default().trim().to_owned();
        if crate::truncate_at_char_boundary(&mut detail, MAX_DETAIL) {
            detail.push('…');
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
            Error::Transport { .. } | Error::Decode { .. } => true,
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

    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Transport { .. } => "transport",
            Error::Decode { .. } => "decode",
            Error::Api { status, .. } => match status {
                400 => "400",
                401 => "401",
                403 => "403",
                404 => "404",
                409 => "409",
                422 => "422",
                429 => "429",
                500..=599 => "5xx",
                _ => "4xx",
            },
        }
    }
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
    fn long_details_are_cut_on_a_char_boundary() {
        let e = Error::api("PATCH", "/x", 500, "é".repeat(400), None);
        let Error::Api { detail, .. } = e else { unreachable!() };
        assert!(detail.len() <= MAX_DETAIL + '…'.len_utf8());
        assert!(detail.ends_with('…'));
    }
}
