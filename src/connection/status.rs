//! The status of a Connection or ClusterConnection: kstatus conditions and what was observed.
//! Pure: no client.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::State;
use crate::k8s::conditions::{Kstatus, Readiness};
use crate::resource::ConnectionStatus;

/// What a pass over a connection found.
pub struct Findings<'a> {
    pub state: &'a State,
    /// The key's `organization` claim.
    pub organization: Option<String>,
    pub base_url: String,
    /// The Environments using it (`namespace/name`).
    pub users: &'a [String],
    /// When the key was last checked, if it was.
    pub checked: Option<Time>,
    pub generation: Option<i64>,
    /// Being deleted (and held while `users` is not empty).
    pub deleting: bool,
}

/// Users named in a message, at most.
const NAMED_USERS: usize = 10;

/// The status after a pass. `lastTransitionTime` moves only when a condition flips.
pub fn next(old: Option<&ConnectionStatus>, obs: &Findings<'_>, now: &Time) -> ConnectionStatus {
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let (ready, reconciling, stalled, reason, message) = match obs.state {
        _ if obs.deleting && !obs.users.is_empty() => (
            false,
            false,
            true,
            "InUse",
            format!(
                "deletion waits: {}; delete them or give them another connection first",
                in_use(obs.users)
            ),
        ),
        State::Ready => {
            (true, false, false, "Ready", format!("the control plane accepts the key; {}", in_use(obs.users)))
        }
        State::Broken { reason, message } => (false, false, true, *reason, message.clone()),
        State::Waiting { reason, message } => (false, true, false, *reason, message.clone()),
    };
    let ready = if ready { Readiness::True } else { Readiness::False };
    let verdict = Kstatus { ready, reconciling, stalled, reason, message: message.clone() };
    ConnectionStatus {
        observed_generation: obs.generation,
        organization: obs.organization.clone().or_else(|| old.and_then(|s| s.organization.clone())),
        base_url: Some(obs.base_url.clone()),
        environments: Some(i32::try_from(obs.users.len()).unwrap_or(i32::MAX)),
        last_checked_time: obs.checked.clone().or_else(|| old.and_then(|s| s.last_checked_time.clone())),
        message: Some(message.clone()),
        conditions: verdict.conditions(old_conditions, obs.generation, now),
    }
}

/// "used by 3 Environments: a/x, a/y, b/z", naming at most [`NAMED_USERS`].
fn in_use(users: &[String]) -> String {
    match users.len() {
        0 => "no Environment uses it".to_owned(),
        n => {
            let named = users.iter().take(NAMED_USERS).cloned().collect::<Vec<_>>().join(", ");
            let more = if n > NAMED_USERS { format!(" and {} more", n - NAMED_USERS) } else { String::new() };
            format!("used by {n} Environment{}: {named}{more}", if n == 1 { "" } else { "s" })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn observed<'a>(state: &'a State, users: &'a [String], deleting: bool) -> Findings<'a> {
        Findings {
            state,
            organization: Some("acme".into()),
            base_url: "https://cp.test".into(),
            users,
            checked: Some(t(5)),
            generation: Some(3),
            deleting,
        }
    }

    fn cond<'a>(
        s: &'a ConnectionStatus,
        type_: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        s.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn ready_broken_and_waiting_map_to_kstatus() {
        let users = vec!["a/x".to_owned()];
        let s = next(None, &observed(&State::Ready, &users, false), &t(10));
        assert_eq!(
            (
                cond(&s, "Ready").status.as_str(),
                cond(&s, "Stalled").status.as_str(),
                cond(&s, "Reconciling").status.as_str()
            ),
            ("True", "False", "False")
        );
        assert_eq!(s.environments, Some(1));
        assert_eq!(s.organization.as_deref(), Some("acme"));
        assert_eq!(s.observed_generation, Some(3));
        assert!(s.message.as_deref().unwrap().contains("used by 1 Environment: a/x"));

        let refused =
            State::Broken { reason: "KeyRefused", message: "the control plane refused the key".into() };
        let s2 = next(Some(&s), &observed(&refused, &users, false), &t(20));
        assert_eq!(cond(&s2, "Stalled").status, "True");
        assert_eq!(cond(&s2, "Stalled").reason, "KeyRefused");
        assert_eq!(cond(&s2, "Ready").last_transition_time, t(20));
        assert_eq!(cond(&s2, "Reconciling").last_transition_time, t(10), "did not flip");

        let down = State::Waiting { reason: "Unreachable", message: "no answer".into() };
        let s3 = next(Some(&s2), &observed(&down, &users, false), &t(30));
        assert_eq!(
            (cond(&s3, "Reconciling").status.as_str(), cond(&s3, "Stalled").status.as_str()),
            ("True", "False")
        );
    }

    #[test]
    fn a_deletion_held_by_users_names_them() {
        let users: Vec<String> = (0..12).map(|i| format!("ns/e{i:02}")).collect();
        let s = next(None, &observed(&State::Ready, &users, true), &t(1));
        assert_eq!(cond(&s, "Stalled").reason, "InUse");
        let m = s.message.unwrap();
        assert!(m.contains("used by 12 Environments: ns/e00") && m.contains("ns/e09 and 2 more"), "{m}");
        assert!(!m.contains("ns/e10"), "{m}");
        let s = next(None, &observed(&State::Ready, &[], true), &t(1));
        assert_eq!(cond(&s, "Ready").status, "True", "nothing holds it: it goes");
    }
}
