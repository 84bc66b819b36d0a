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
        let mut detail = detail.replace(['\n', '\r'], " ");
        if detail.len() > MAX_DETAIL {
            let mut cut = MAX_DETAIL;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
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
    /// failures, timeouts, 408, 429 and 5xx. Everything else needs a human (bad key, bad spec).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::Decode { .. } => true,
            Error::Api { status, .. } => matches!(status, 408 | 429 | 500..=599),
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
    fn long_details_are_cut_on_a_char_boundary() {
        let e = Error::api("PATCH", "/x", 500, "é".repeat(400), None);
        let Error::Api { detail, .. } = e else { unreachable!() };
        assert!(detail.len() <= MAX_DETAIL + '…'.len_utf8());
        assert!(detail.ends_with('…'));
    }
}
