//! Reconcile errors: which operation failed, whether waiting can fix it, and what a human should
//! do about it. Messages never contain the API key or a worker token.

use std::time::Duration;

use super::env_vars::Problem as EnvProblem;
use super::ownership::{Elsewhere, Owner};
use crate::connection::Unusable;
use crate::{controlplane, k8s};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the remote environment failed")]
    GetRemote {
        #[source]
        source: controlplane::Error,
    },
    #[error("creating the remote environment failed")]
    CreateRemote {
        #[source]
        source: controlplane::Error,
    },
    #[error("looking up the remote environment by name failed")]
    FindRemote {
        #[source]
        source: controlplane::Error,
    },
    #[error("updating the remote environment failed")]
    UpdateRemote {
        #[source]
        source: controlplane::Error,
    },
    #[error("deleting the remote environment failed")]
    DeleteRemote {
        #[source]
        source: controlplane::Error,
    },
    #[error("releasing the remote environment (marking its owner marker released) failed")]
    ReleaseRemote {
        #[source]
        source: controlplane::Error,
    },
    #[error("fetching the worker command failed")]
    WorkerCommand {
        #[source]
        source: controlplane::Error,
    },
    /// `me`: the resource whose message it is (what it may read of the holder depends on it).
    #[error("{}", conflict(name, id, elsewhere, me))]
    NameConflict { name: String, id: String, elsewhere: Elsewhere, me: Owner },
    #[error("{}", owned_elsewhere(which, elsewhere, me))]
    OwnedElsewhere { which: String, elsewhere: Elsewhere, me: Owner },
    #[error(
        "the name {name:?} was taken when creating the environment, and no environment had it a \
         moment later (deleted meanwhile?)"
    )]
    CreateRaced { name: String },
    #[error(
        "Secret {name:?} already exists and is not owned by this Environment: delete it, or set \
         spec.workerSecret.name to another name"
    )]
    SecretConflict { name: String },
    #[error(
        "the environment {id:?} named by annotation kubiya.ai/environment-id does not exist in the \
         control plane (or belongs to another organization): fix or remove the annotation"
    )]
    AdoptMissing { id: String },
    #[error(
        "the environment lives in {was}, but its connection now leads to {now}: an environment \
         cannot move between organisations or control planes, so nothing is created or deleted \
         meanwhile; put the connection's key and URL back, or, if this is the same control plane \
         under a new address, annotate kubiya.ai/deletion-policy=Orphan, delete this resource and \
         apply it again (it takes the environment back by its name)"
    )]
    Moved { was: String, now: String },
    #[error("the Environment cannot be decoded: {error}; fix or delete it")]
    Undecodable { error: String },
    #[error(
        "{connection} does not allow adopting environment {id}: adopting needs allowAdoption: true on a \
         ClusterConnection, a Connection of this namespace, or the operator's own key with \
         --allow-adoption"
    )]
    AdoptionNotAllowed { connection: String, id: String },
    #[error(
        "there is no environment {name:?} (nor with the id of kubiya.ai/environment-id) in the control \
         plane: managementPolicy Observe never creates one; create it, fix the name or id, or set \
         managementPolicy: Full"
    )]
    NothingToObserve { name: String },
    #[error("{}", env_secret(.0))]
    EnvSecret(EnvProblem),
    #[error(transparent)]
    Connection(#[from] Unusable),
    #[error(transparent)]
    Kube(#[from] k8s::Error),
    #[error("the pass took longer than {0:?} and was abandoned")]
    Timeout(Duration),
    #[error("the object has no name or namespace")]
    Unnamed,
}

/// What an error means to the people and tools watching: one row per kind of error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    /// The CamelCase reason in conditions and Events.
    pub reason: &'static str,
    /// A bounded label for metrics: the operation that failed.
    pub metric: &'static str,
    /// Retrying without a change is unlikely to succeed: `Stalled`, retried only slowly.
    pub permanent: bool,
    /// Appended to the message: what to do.
    pub advice: &'static str,
}

const RETRY: &str = " (will retry)";

/// The longest a server's `Retry-After` holds an object back: a longer one (by mistake, or from
/// a proxy) would otherwise park it, deletion included, for as long as it says.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

impl Error {
    /// The row of the table for this error.
    pub fn kind(&self) -> Kind {
        let row = |reason, metric, permanent, advice| Kind { reason, metric, permanent, advice };
        match self {
            Error::GetRemote { source } => remote(source, "get_remote"),
            Error::CreateRemote { source } => remote(source, "create_remote"),
            Error::FindRemote { source } => remote(source, "find_remote"),
            Error::UpdateRemote { source } => remote(source, "update_remote"),
            Error::DeleteRemote { source } => remote(source, "delete_remote"),
            Error::ReleaseRemote { source } => remote(source, "release_remote"),
            Error::WorkerCommand { source } => remote(source, "worker_command"),
            Error::NameConflict { .. } => row("NameConflict", "name_conflict", true, ""),
            Error::OwnedElsewhere { .. } => row("OwnedElsewhere", "owned_elsewhere", true, ""),
            Error::CreateRaced { .. } => row("CreateRaced", "create_raced", false, RETRY),
            Error::SecretConflict { .. } => row("SecretConflict", "secret_conflict", true, ""),
            Error::AdoptMissing { .. } => row("AdoptionFailed", "adopt_missing", true, ""),
            Error::Undecodable { .. } => row("InvalidSpec", "undecodable", true, ""),
            Error::AdoptionNotAllowed { .. } => row("AdoptionNotAllowed", "adoption_not_allowed", true, ""),
            Error::Moved { .. } => row("ConnectionChanged", "connection_moved", true, ""),
            Error::NothingToObserve { .. } => row("NotFound", "nothing_to_observe", true, ""),
            Error::Connection(u) => {
                let permanent = u.is_permanent();
                row(u.reason(), u.metric(), permanent, if permanent { "" } else { RETRY })
            }
            Error::EnvSecret(EnvProblem::NotFound { .. }) => {
                row("SecretNotFound", "env_secret_not_found", true, "")
            }
            Error::EnvSecret(EnvProblem::Unusable { .. }) => {
                row("InvalidSecretValue", "env_secret_invalid", true, "")
            }
            Error::EnvSecret(EnvProblem::TooMany { .. }) => {
                row("TooManyEnvVars", "too_many_env_vars", true, "")
            }
            Error::Kube(e) => row("KubernetesApiError", e.op.metric(), false, RETRY),
            Error::Timeout(_) => row("Timeout", "timeout", false, RETRY),
            Error::Unnamed => row("InvalidObject", "unnamed", true, ""),
        }
    }

    /// Permanent errors need a human: retrying without a change is unlikely to succeed.
    pub fn is_permanent(&self) -> bool {
        self.kind().permanent
    }

    /// The CamelCase reason used in conditions and Events.
    pub fn reason(&self) -> &'static str {
        self.kind().reason
    }

    /// This resource is no longer the environment's owner: its worker Secret goes.
    pub fn loses_ownership(&self) -> bool {
        matches!(self, Error::OwnedElsewhere { .. })
    }

    /// Waiting for its connection: the connection's next change wakes the Environment.
    pub fn waits_for_connection(&self) -> bool {
        matches!(self, Error::Connection(u) if u.waits_for_connection())
    }

    /// How long the server asked us to wait, if it did, at most [`MAX_RETRY_AFTER`].
    pub fn retry_after(&self) -> Option<Duration> {
        self.asked_to_wait().map(|d| d.min(MAX_RETRY_AFTER))
    }

    fn asked_to_wait(&self) -> Option<Duration> {
        match self {
            Error::GetRemote { source }
            | Error::CreateRemote { source }
            | Error::FindRemote { source }
            | Error::UpdateRemote { source }
            | Error::DeleteRemote { source }
            | Error::ReleaseRemote { source }
            | Error::WorkerCommand { source } => source.retry_after(),
            _ => None,
        }
    }

    /// The whole cause chain in one line, with advice.
    pub fn explain(&self) -> String {
        let chain = crate::error_chain(self);
        match self.asked_to_wait() {
            Some(asked) if asked > MAX_RETRY_AFTER => format!(
                "{chain} (the control plane asked to wait {}s; will retry in {}s, the most the operator waits)",
                asked.as_secs(),
                MAX_RETRY_AFTER.as_secs()
            ),
            Some(asked) => {
                format!("{chain} (will retry in {}s, as the control plane asked)", asked.as_secs())
            }
            None => chain + self.kind().advice,
        }
    }
}

/// The row for a failed control-plane call, from the answer's class. `metric` names the call.
fn remote(e: &controlplane::Error, metric: &'static str) -> Kind {
    let (reason, advice) = match e {
        // Refused by the client itself: a human decides (the messages say what to look at).
        controlplane::Error::Redirect { .. } => ("Redirected", ""),
        controlplane::Error::TooLarge { .. } => ("AnswerTooLarge", ""),
        controlplane::Error::OverBudget { .. } => ("AnswersOverBudget", ""),
        _ => classify(e, metric),
    };
    Kind { reason, metric, permanent: !e.is_retryable(), advice }
}

/// Reason and advice for an answer, from its status.
fn classify(e: &controlplane::Error, metric: &'static str) -> (&'static str, &'static str) {
    match e.status() {
        Some(401) => ("Unauthorized", " (check the API key of the Environment's connection)"),
        Some(403) => ("Forbidden", " (the connection's API key may not manage environments)"),
        // A refused deletion has nothing to do with the spec; the Orphan hint follows it.
        Some(400 | 409 | 422 | 500) if metric == "delete_remote" && !e.is_retryable() => ("Rejected", ""),
        Some(400 | 409 | 422 | 500) if !e.is_retryable() => ("Rejected", " (fix the Environment spec)"),
        Some(404) => ("NotFound", " (check the control-plane URL of the Environment's connection)"),
        _ => ("ControlPlaneUnavailable", RETRY),
    }
}

/// What a Secret of `spec.executionEnvironment` lacks: names and keys, never a value.
fn env_secret(problem: &EnvProblem) -> String {
    const MEANWHILE: &str = "nothing is sent to the control plane meanwhile";
    match problem {
        EnvProblem::NotFound { secret, key: None } => format!(
            "Secret {secret:?}, named in spec.executionEnvironment, does not exist in this namespace: \
             create it (it is picked up as it appears; {MEANWHILE})"
        ),
        EnvProblem::NotFound { secret, key: Some(key) } => format!(
            "Secret {secret:?} has no key {key:?}, named in spec.executionEnvironment.env: add the key \
             or fix the reference (it is picked up as it appears; {MEANWHILE})"
        ),
        EnvProblem::Unusable { secret, key, why } => format!(
            "the value of key {key:?} of Secret {secret:?} cannot be an environment variable: {why}; \
             fix the Secret ({MEANWHILE})"
        ),
        EnvProblem::TooMany { count } => format!(
            "with the keys of its Secrets the execution environment would have {count} env vars, more \
             than the {} the operator sends: reference Secrets with fewer keys ({MEANWHILE})",
            crate::resource::limits::EXECUTION_ITEMS
        ),
    }
}

/// `environment/<name> -n <namespace>` of `me`, for commands in messages.
fn target(me: &Owner) -> String {
    format!("environment/{} -n {}", me.name, me.namespace)
}

/// The command that hands environment `id` to `me`.
fn adopt_command(id: &str, me: &Owner) -> String {
    format!("kubectl annotate {} kubiya.ai/environment-id={id}", target(me))
}

/// The command that takes an environment managed from `cluster` for `me`.
fn take_over_command(cluster: &str, me: &Owner) -> String {
    format!("kubectl annotate {} kubiya.ai/take-over-from={cluster}", target(me))
}

/// Creating answered 409. What the tenant reads names nothing outside its namespace: another
/// resource's namespace, name and id go to the operator's log only.
fn conflict(name: &str, id: &str, elsewhere: &Elsewhere, me: &Owner) -> String {
    let head = format!("a control-plane environment named {name:?} ({id}) already exists");
    let adopt = adopt_command(id, me);
    match elsewhere {
        Elsewhere::Foreign => format!(
            "{head} and was not created by this operator: choose another spec.name, or take it over \
             (its fields become this spec's) with `{adopt}`"
        ),
        Elsewhere::Released(o) => {
            format!("{head} and was released by {}: to take it over, `{adopt}`", o.seen_from(me))
        }
        Elsewhere::GoneOwner(o) => format!(
            "{head}; it was managed by {}, which no longer exists: to take it over, `{adopt}`",
            o.seen_from(me)
        ),
        Elsewhere::LiveOwner(o) => format!(
            "a control-plane environment named {name:?} already exists and is managed by {}: choose \
             another spec.name (two resources must not manage one environment; to move it here, \
             its manager is annotated kubiya.ai/deletion-policy=Orphan and deleted first, and the \
             operator's log names it)",
            o.seen_from(me)
        ),
        Elsewhere::OtherCluster(o) => format!(
            "a control-plane environment named {name:?} already exists and is managed from cluster \
             {}: choose another spec.name, or move it to this cluster with `{}` (the other \
             cluster's resource then stops managing it)",
            o.cluster_name(),
            take_over_command(o.cluster_name(), me)
        ),
    }
}

/// The environment this resource recorded, or was pointed at, is someone else's.
fn owned_elsewhere(which: &str, elsewhere: &Elsewhere, me: &Owner) -> String {
    let id = which;
    let recreate = format!(
        "this resource writes nothing to it; to take it, delete this resource (nothing remote is \
         deleted) and create it again annotated kubiya.ai/environment-id={id}"
    );
    match elsewhere {
        Elsewhere::Foreign => {
            format!("the environment {id} carries no owner marker: to manage it, `{}`", adopt_command(id, me))
        }
        Elsewhere::Released(o) => {
            format!("the environment {id} was released by {}: {recreate}", o.seen_from(me))
        }
        Elsewhere::GoneOwner(o) => format!(
            "the environment {id} is marked as managed by {}, which no longer exists: {recreate}",
            o.seen_from(me)
        ),
        Elsewhere::LiveOwner(o) => format!(
            "the environment {id} is managed by {}: two resources must not manage one environment, \
             so this resource writes nothing to it and publishes no worker Secret; delete this \
             resource (nothing remote is deleted), or have that one let go first (annotate it \
             kubiya.ai/deletion-policy=Orphan and delete it; the operator's log names it)",
            o.seen_from(me)
        ),
        Elsewhere::OtherCluster(o) => format!(
            "the environment {id} is managed from cluster {}: this resource writes nothing to it and \
             publishes no worker Secret, and deleting it leaves the environment alone; to take it \
             over, `{}`",
            o.cluster_name(),
            take_over_command(o.cluster_name(), me)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(status: u16) -> controlplane::Error {
        controlplane::Error::api(
            "POST",
            "/api/v1/environments",
            status,
            "body.name: String should have at least 2 characters".into(),
            None,
        )
    }

    #[test]
    fn control_plane_answers_are_classified_by_status() {
        let e = Error::CreateRemote { source: cp(422) };
        assert_eq!(
            e.kind(),
            Kind {
                reason: "Rejected",
                metric: "create_remote",
                permanent: true,
                advice: " (fix the Environment spec)"
            }
        );
        assert_eq!(
            e.explain(),
            "creating the remote environment failed: POST /api/v1/environments: control plane \
             answered 422: body.name: String should have at least 2 characters (fix the Environment spec)"
        );
        let rows = [
            (401, "Unauthorized", true),
            (403, "Forbidden", true),
            (400, "Rejected", true),
            (409, "Rejected", true),
            (404, "NotFound", true),
            (500, "ControlPlaneUnavailable", false),
            (503, "ControlPlaneUnavailable", false),
            (429, "ControlPlaneUnavailable", false),
        ];
        for (status, reason, permanent) in rows {
            let e = Error::GetRemote { source: cp(status) };
            assert_eq!((e.reason(), e.is_permanent()), (reason, permanent), "{status}");
            assert_eq!(e.explain().ends_with(RETRY), !permanent, "{status}");
        }
        let refused = Error::DeleteRemote {
            source: controlplane::Error::api(
                "DELETE",
                "/x",
                400,
                "Cannot delete the default environment".into(),
                None,
            ),
        };
        assert_eq!(refused.reason(), "Rejected");
        assert!(!refused.explain().contains("fix the Environment spec"));
    }

    #[test]
    fn retry_after_is_honoured_up_to_a_cap_and_said() {
        let throttled = |secs| Error::CreateRemote {
            source: controlplane::Error::api(
                "POST",
                "/x",
                429,
                "Too Many Requests".into(),
                Some(Duration::from_secs(secs)),
            ),
        };
        assert_eq!(throttled(7).retry_after(), Some(Duration::from_secs(7)));
        assert!(throttled(7).explain().ends_with("(will retry in 7s, as the control plane asked)"));
        assert_eq!(throttled(300).retry_after(), Some(MAX_RETRY_AFTER));
        let years = throttled(100_000_000);
        assert_eq!(years.retry_after(), Some(MAX_RETRY_AFTER));
        assert!(
            years.explain().contains("asked to wait 100000000s; will retry in 300s"),
            "{}",
            years.explain()
        );
        assert_eq!(Error::CreateRemote { source: cp(503) }.retry_after(), None);
    }

    #[test]
    fn refusals_of_the_client_itself_are_permanent_and_named() {
        let redirected = Error::GetRemote {
            source: controlplane::Error::Redirect {
                method: "GET",
                route: "/x",
                status: 307,
                target: "http://else".into(),
            },
        };
        assert_eq!((redirected.reason(), redirected.is_permanent()), ("Redirected", true));
        assert!(!redirected.explain().contains("will retry"));
        let big = Error::FindRemote {
            source: controlplane::Error::TooLarge { method: "GET", route: "/x", limit: 1 },
        };
        assert_eq!((big.reason(), big.is_permanent()), ("AnswerTooLarge", true));
        let crowded = Error::FindRemote {
            source: controlplane::Error::OverBudget { method: "GET", route: "/x", limit: 1 },
        };
        assert_eq!((crowded.reason(), crowded.is_permanent()), ("AnswersOverBudget", false));
    }

    fn owner(cluster: &str, ns: &str, name: &str) -> Owner {
        Owner {
            cluster: cluster.into(),
            uid: format!("uid-{name}"),
            namespace: ns.into(),
            namespace_uid: format!("nsu-{ns}"),
            name: name.into(),
        }
    }

    #[test]
    fn every_kubernetes_error_is_transient_and_every_refusal_permanent() {
        let elsewhere = Elsewhere::Foreign;
        let me = owner("c", "ns", "e");
        let permanent = [
            Error::NameConflict {
                name: "n".into(),
                id: "i".into(),
                elsewhere: elsewhere.clone(),
                me: me.clone(),
            },
            Error::OwnedElsewhere { which: "i".into(), elsewhere, me },
            Error::SecretConflict { name: "s".into() },
            Error::AdoptMissing { id: "i".into() },
            Error::Undecodable { error: "e".into() },
            Error::Moved { was: "a".into(), now: "b".into() },
            Error::Unnamed,
        ];
        for e in permanent {
            assert!(e.is_permanent(), "{e:?}");
            assert!(!e.explain().ends_with(RETRY), "{e:?}");
        }
        assert!(!Error::Timeout(Duration::from_secs(1)).is_permanent());
        assert_eq!(Error::Undecodable { error: "e".into() }.reason(), "InvalidSpec");
        let kube = Error::Kube(crate::k8s::Error::new(
            crate::k8s::Op::WriteSecret,
            kube::Error::Api(kube::core::Status::failure("conflict", "Conflict").with_code(409).boxed()),
        ));
        assert_eq!(
            kube.kind(),
            Kind { reason: "KubernetesApiError", metric: "write_secret", permanent: false, advice: RETRY }
        );
        let waiting = Error::Connection(Unusable::NotReady {
            connection: "c".into(),
            why: "w".into(),
            permanent: false,
        });
        assert_eq!(
            (waiting.reason(), waiting.is_permanent(), waiting.kind().metric),
            ("ConnectionNotReady", false, "connection_not_ready")
        );
        assert!(waiting.explain().ends_with(RETRY));
        let missing = Error::Connection(Unusable::NotFound { connection: "c".into() });
        assert!(missing.is_permanent() && !missing.explain().ends_with(RETRY));
    }

    /// What a tenant of `team-b` reads of a refusal: the case, the command, and nothing of
    /// another namespace (its name, its resources' names, their environments' ids).
    #[test]
    fn conflicts_say_which_case_and_give_the_command_and_nothing_of_other_namespaces() {
        let me = owner("c1", "team-b", "mover");
        let elsewhere_here = owner("c1", "team-a", "secret-project");
        let same_namespace = owner("c1", "team-b", "old");
        let other_cluster = owner("c2", "team-a", "secret-project");
        let adopt = "kubectl annotate environment/mover -n team-b kubiya.ai/environment-id=id-1";
        let take = "kubectl annotate environment/mover -n team-b kubiya.ai/take-over-from=c2";
        let conflicts = [
            (Elsewhere::Foreign, vec!["not created by this operator", adopt]),
            (Elsewhere::Released(same_namespace.clone()), vec!["released by Environment old", adopt]),
            (
                Elsewhere::Released(elsewhere_here.clone()),
                vec!["released by another resource of this cluster", adopt],
            ),
            (
                Elsewhere::GoneOwner(elsewhere_here.clone()),
                vec!["another resource of this cluster, which no longer exists", adopt],
            ),
            (
                Elsewhere::LiveOwner(elsewhere_here.clone()),
                vec!["managed by another resource of this cluster", "choose another spec.name"],
            ),
            (Elsewhere::OtherCluster(other_cluster.clone()), vec!["managed from cluster c2", take]),
        ];
        for (elsewhere, says) in conflicts {
            let live = matches!(elsewhere, Elsewhere::LiveOwner(_) | Elsewhere::OtherCluster(_));
            let e = Error::NameConflict { name: "prod".into(), id: "id-1".into(), elsewhere, me: me.clone() };
            let text = e.to_string();
            for s in says {
                assert!(text.contains(s), "{s:?} in {text}");
            }
            assert!(!text.contains("team-a") && !text.contains("secret-project"), "{text}");
            assert_eq!(
                text.contains("id-1"),
                !live,
                "the id of an environment someone manages is not told: {text}"
            );
        }
        let owned = [
            (Elsewhere::Foreign, vec![adopt]),
            (
                Elsewhere::Released(elsewhere_here.clone()),
                vec![
                    "released by another resource",
                    "create it again annotated kubiya.ai/environment-id=id-1",
                ],
            ),
            (
                Elsewhere::GoneOwner(elsewhere_here.clone()),
                vec!["which no longer exists", "delete this resource"],
            ),
            (
                Elsewhere::LiveOwner(elsewhere_here.clone()),
                vec!["managed by another resource of this cluster", "publishes no worker Secret"],
            ),
            (Elsewhere::OtherCluster(other_cluster), vec!["managed from cluster c2", take]),
        ];
        for (elsewhere, says) in owned {
            let text = Error::OwnedElsewhere { which: "id-1".into(), elsewhere, me: me.clone() }.to_string();
            for s in says {
                assert!(text.contains(s), "{s:?} in {text}");
            }
            assert!(!text.contains("team-a") && !text.contains("secret-project"), "{text}");
        }
    }
}
