//! kubiya-operator: makes the Kubiya control plane's Environments declarative.

pub mod commands;
pub mod config;
pub mod connection;
pub mod controlplane;
pub mod export;
pub mod k8s;
pub mod metrics;
pub mod queue;
pub mod reconcile;
pub mod resource;
pub mod runtime;

/// Cuts `s` to at most `max` bytes, on a character boundary; returns whether it cut.
pub fn truncate_at_char_boundary(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    true
}

/// An error and all its causes on one line, `outer: inner: root`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
