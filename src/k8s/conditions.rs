//! kstatus conditions: `Ready`, `Reconciling`, `Stalled`, which every kind of the operator reports
//! with one reason and one message. Pure: no client.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// The condition of `type_` in `conditions`, if there is one.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is there and True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// A condition of `type_`, whose `lastTransitionTime` moves only when its status flips.
pub fn condition(
    old: &[Condition],
    type_: &str,
    is: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if is { "True" } else { "False" };
    let last_transition_time = match find(old, type_) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now.clone(),
    };
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// What `Ready` says after a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    True,
    False,
    /// Left as it was (its generation brought up to date): a Ready object with passing trouble,
    /// or a paused one, is still Ready. True if there was none.
    Kept,
}

/// The three kstatus conditions, sharing one reason and one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kstatus {
    pub ready: Readiness,
    pub reconciling: bool,
    pub stalled: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Kstatus {
    pub fn new(
        ready: Readiness,
        reconciling: bool,
        stalled: bool,
        reason: &'static str,
        message: String,
    ) -> Self {
        Kstatus { ready, reconciling, stalled, reason, message }
    }

    /// `Ready`, `Reconciling`, `Stalled`, from the `old` ones and this verdict.
    pub fn conditions(&self, old: &[Condition], generation: Option<i64>, now: &Time) -> Vec<Condition> {
        let cond =
            |type_: &str, is: bool| condition(old, type_, is, self.reason, &self.message, generation, now);
        let ready = match self.ready {
            Readiness::True => cond(READY, true),
            Readiness::False => cond(READY, false),
            Readiness::Kept => match find(old, READY) {
                Some(c) => Condition { observed_generation: generation, ..c.clone() },
                None => cond(READY, true),
            },
        };
        vec![ready, cond(RECONCILING, self.reconciling), cond(STALLED, self.stalled)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn verdict(ready: Readiness, stalled: bool) -> Kstatus {
        Kstatus { ready, reconciling: !stalled, stalled, reason: "Why", message: "what".into() }
    }

    #[test]
    fn transition_times_move_only_when_a_status_flips() {
        let first = verdict(Readiness::False, false).conditions(&[], Some(1), &t(1));
        assert_eq!(first.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(), [READY, RECONCILING, STALLED]);
        assert!(first.iter().all(|c| c.last_transition_time == t(1) && c.observed_generation == Some(1)));
        let later = verdict(Readiness::True, false).conditions(&first, Some(2), &t(5));
        assert_eq!(find(&later, READY).unwrap().last_transition_time, t(5), "flipped");
        assert_eq!(find(&later, RECONCILING).unwrap().last_transition_time, t(1), "did not flip");
        assert!(is_true(&later, READY) && !is_true(&later, STALLED) && !is_true(&[], READY));
    }

    #[test]
    fn a_kept_ready_keeps_its_text_and_time_and_takes_the_generation() {
        let ready = verdict(Readiness::True, false).conditions(&[], Some(1), &t(1));
        let kept = verdict(Readiness::Kept, true).conditions(&ready, Some(3), &t(9));
        let r = find(&kept, READY).unwrap();
        assert_eq!(
            (r.status.as_str(), r.last_transition_time.clone(), r.observed_generation),
            ("True", t(1), Some(3))
        );
        let none = verdict(Readiness::Kept, false).conditions(&[], Some(3), &t(9));
        assert!(is_true(&none, READY), "nothing to keep: True");
        assert_eq!(find(&kept, STALLED).unwrap().reason, "Why");
    }
}
