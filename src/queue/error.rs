//! A WorkerQueue pass's errors: which operation failed, whether waiting can fix it, and what a
//! human should do. Messages never name anything outside the queue's namespace.

use std::time::Duration;

use super::decide::Refusal;
use crate::connection::Unusable;
use crate::reconcile::Kind;
use crate::reconcile::ownership::{Elsewhere, Owner};
use crate::{controlplane, k8s};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the remote queue failed")]
    GetRemote {
        #[source]
        source: controlplane::Error,
    },
    #[error("creating the remote queue failed")]
    CreateRemote {
        #[source]
        source: controlplane::Error,
    },
    #[error("looking up the remote queue by name failed")]
    FindRemote {
        #[source]
        source: controlplane::Error,
    },
    #[error("updating the remote queue failed")]
    UpdateRemote {
        #[source]
        source: controlplane::Error,
    },
    #[error("deleting the remote queue failed")]
    DeleteRemote {
        #[source]
        source: controlplane::Error,
    },
    #[error("releasing the remote queue (marking its owner marker released) failed")]
    ReleaseRemote {
        #[source]
        source: controlplane::Error,
    },
    #[error("fetching the queue's worker command failed")]
    QueueCommand {
        #[source]
        source: controlplane::Error,
    },
    #[error("{}", refused(refusal, me))]
    Refused { refusal: Box<Refusal>, me: Box<Owner> },
    #[error(
        "Environment {name:?} of spec.environmentRef does not exist in this namespace: create it, \
         or fix spec.environmentRef"
    )]
    EnvironmentNotFound { name: String },
    #[error("waiting for Environment {name:?} to be Ready: {why}")]
    EnvironmentNotReady { name: String, why: String },
    #[error(
        "Environment {name:?} only observes its remote environment (managementPolicy Observe), so \
         queues are not created or changed in it: set managementPolicy: Observe on this WorkerQueue, \
         or manage the Environment"
    )]
    EnvironmentObserved { name: String },
    #[error(
        "Secret {name:?} already exists and is not owned by this WorkerQueue: delete it, or set \
         spec.workerSecret.name to another name"
    )]
    SecretConflict { name: String },
    #[error(
        "Deployment {name:?} already exists and is not owned by this WorkerQueue: delete or rename it, \
         or rename this WorkerQueue (its workers' Deployment is <metadata.name>-workers)"
    )]
    DeploymentConflict { name: String },
    #[error("the WorkerQueue cannot be decoded: {error}; fix or delete it")]
    Undecodable { error: String },
    #[error(transparent)]
    Connection(#[from] Unusable),
    #[error(transparent)]
    Kube(#[from] k8s::Error),
    #[error("the pass took longer than {0:?} and was abandoned")]
    Timeout(Duration),
    #[error("the object has no name or namespace")]
    Unnamed,
}

const RETRY: &str = " (will retry)";

impl Error {
    pub fn refused(refusal: Refusal, me: Owner) -> Error {
        Error::Refused { refusal: Box::new(refusal), me: Box::new(me) }
    }

    pub fn kind(&self) -> Kind {
        let row = |reason, metric, permanent, advice| Kind { reason, metric, permanent, advice };
        match self {
            Error::GetRemote { source } => remote(source, "get_remote"),
            Error::CreateRemote { source } => remote(source, "create_remote"),
            Error::FindRemote { source } => remote(source, "find_remote"),
            Error::UpdateRemote { source } => remote(source, "update_remote"),
            Error::DeleteRemote { source } => remote(source, "delete_remote"),
            Error::ReleaseRemote { source } => remote(source, "release_remote"),
            Error::QueueCommand { source } => remote(source, "worker_command"),
            Error::Refused { refusal, .. } => match refusal.as_ref() {
                Refusal::NameConflict { .. } => row("NameConflict", "name_conflict", true, ""),
                Refusal::OwnedElsewhere { .. } => row("OwnedElsewhere", "owned_elsewhere", true, ""),
                Refusal::AdoptionNotAllowed { .. } => {
                    row("AdoptionNotAllowed", "adoption_not_allowed", true, "")
                }
                Refusal::AdoptMissing { .. } => row("AdoptionFailed", "adopt_missing", true, ""),
                Refusal::NothingToObserve { .. } => row("NotFound", "nothing_to_observe", true, ""),
                Refusal::CreateRaced { .. } => row("CreateRaced", "create_raced", false, RETRY),
                Refusal::OtherEnvironment { .. } => row("OtherEnvironment", "other_environment", true, ""),
            },
            Error::EnvironmentNotFound { .. } => {
                row("EnvironmentNotFound", "environment_not_found", true, "")
            }
            // Not permanent: the Environment wakes its queues once it can take them.
            Error::EnvironmentNotReady { .. } => {
                row("EnvironmentNotReady", "environment_not_ready", false, RETRY)
            }
            Error::EnvironmentObserved { .. } => row("EnvironmentObserved", "environment_observed", true, ""),
            Error::SecretConflict { .. } => row("SecretConflict", "secret_conflict", true, ""),
            Error::DeploymentConflict { .. } => row("DeploymentConflict", "deployment_conflict", true, ""),
            Error::Undecodable { .. } => row("InvalidSpec", "undecodable", true, ""),
            Error::Connection(u) => {
                let permanent = u.is_permanent();
                row(u.reason(), u.metric(), permanent, if permanent { "" } else { RETRY })
            }
            Error::Kube(e) => row("KubernetesApiError", e.op.metric(), false, RETRY),
            Error::Timeout(_) => row("Timeout", "timeout", false, RETRY),
            Error::Unnamed => row("InvalidObject", "unnamed", true, ""),
        }
    }

    pub fn is_permanent(&self) -> bool {
        self.kind().permanent
    }

    pub fn reason(&self) -> &'static str {
        self.kind().reason
    }

    /// How long the server asked to wait, if it did (capped as an Environment's is).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::GetRemote { source }
            | Error::CreateRemote { source }
            | Error::FindRemote { source }
            | Error::UpdateRemote { source }
            | Error::DeleteRemote { source }
            | Error::ReleaseRemote { source }
            | Error::QueueCommand { source } => source.retry_after(),
            _ => None,
        }
        .map(|d| d.min(crate::reconcile::MAX_RETRY_AFTER))
    }

    /// Waiting for its connection: the connection's next change is waited for.
    pub fn waits_for_connection(&self) -> bool {
        matches!(self, Error::Connection(u) if u.waits_for_connection())
    }

    /// The whole cause chain in one line, with advice.
    pub fn explain(&self) -> String {
        crate::error_chain(self) + self.kind().advice
    }
}

/// The row for a failed control-plane call, from the answer's class.
fn remote(e: &controlplane::Error, metric: &'static str) -> Kind {
    let (reason, advice) = match (e, e.status()) {
        (controlplane::Error::Redirect { .. }, _) => ("Redirected", ""),
        (controlplane::Error::TooLarge { .. }, _) => ("AnswerTooLarge", ""),
        (controlplane::Error::OverBudget { .. }, _) => ("AnswersOverBudget", ""),
        (_, Some(401)) => ("Unauthorized", " (check the API key of the Environment's connection)"),
        (_, Some(403)) => ("Forbidden", " (the connection's API key may not manage worker queues)"),
        // The server refuses to delete a queue while workers are active (or the `default` one).
        (_, Some(400)) if metric == "delete_remote" => (
            "DeletionRefused",
            " (stop the queue's workers, or annotate kubiya.ai/deletion-policy=Orphan to leave the queue; will retry)",
        ),
        (_, Some(400 | 409 | 422 | 500)) if !e.is_retryable() => ("Rejected", " (fix the WorkerQueue spec)"),
        (_, Some(404)) if metric == "create_remote" => (
            "EnvironmentNotFound",
            " (the queue's environment is gone from the control plane: the Environment's next pass creates it again)",
        ),
        (_, Some(404)) => ("NotFound", " (check the control-plane URL of the Environment's connection)"),
        _ => ("ControlPlaneUnavailable", RETRY),
    };
    // A refused deletion is retried: workers stop, and then it goes.
    let refused_deletion = metric == "delete_remote" && e.status() == Some(400);
    let permanent = !(e.is_retryable() || refused_deletion);
    Kind { reason, metric, permanent, advice }
}

/// `workerqueue/<name> -n <namespace>` of `me`, for commands in messages.
fn target(me: &Owner) -> String {
    format!("workerqueue/{} -n {}", me.name, me.namespace)
}

/// Who holds a queue, as the tenant `me` may read it.
fn holder(o: &Owner, me: &Owner) -> String {
    if o.cluster != me.cluster {
        format!("a resource of cluster {}", o.cluster_name())
    } else if o.namespace == me.namespace && o.namespace_uid == me.namespace_uid {
        format!("WorkerQueue {}", o.name)
    } else {
        "another resource of this cluster".to_owned()
    }
}

fn refused(refusal: &Refusal, me: &Owner) -> String {
    let adopt = |id: &str| format!("kubectl annotate {} kubiya.ai/worker-queue-id={id}", target(me));
    let take_over =
        |o: &Owner| format!("kubectl annotate {} kubiya.ai/take-over-from={}", target(me), o.cluster_name());
    let whose = |e: &Elsewhere| match e {
        Elsewhere::Foreign => "was not created by this operator".to_owned(),
        Elsewhere::Released(o) => format!("was released by {}", holder(o, me)),
        Elsewhere::GoneOwner(o) => format!("was managed by {}, which no longer exists", holder(o, me)),
        Elsewhere::LiveOwner(o) => format!("is managed by {}", holder(o, me)),
        Elsewhere::OtherCluster(o) => format!("is managed from cluster {}", o.cluster_name()),
    };
    let way_out = |e: &Elsewhere, id: &str| {
        match e {
        Elsewhere::LiveOwner(_) => "two resources must not manage one queue, so this resource writes nothing to it \
             and publishes no worker Secret; delete this resource (nothing remote is deleted), or have that one \
             let go first (annotate it kubiya.ai/deletion-policy=Orphan and delete it)"
            .to_owned(),
        Elsewhere::OtherCluster(o) => format!("to move it to this cluster, `{}`", take_over(o)),
        _ => format!("to take it over (its fields become this spec's), `{}`", adopt(id)),
    }
    };
    match refusal {
        Refusal::NameConflict { name, elsewhere } => {
            let alt = match elsewhere {
                Elsewhere::LiveOwner(_) => "choose another spec.name".to_owned(),
                // The id is not told (the tenant may not have it): the operator's log has it.
                _ => "choose another spec.name, or take it over by its id (kubectl get kwq shows it where it is \
                      managed; the operator's log names it)"
                    .to_owned(),
            };
            format!(
                "a queue named {name:?} already exists in this environment and {}: {alt}",
                whose(elsewhere)
            )
        }
        Refusal::OwnedElsewhere { which, elsewhere } => {
            format!("the queue {which} {}: {}", whose(elsewhere), way_out(elsewhere, which))
        }
        Refusal::AdoptionNotAllowed { id } => format!(
            "the connection does not allow adopting queue {id}: adopting needs allowAdoption: true on the \
             Environment's connection"
        ),
        Refusal::AdoptMissing { id } => format!(
            "the queue {id:?} named by annotation kubiya.ai/worker-queue-id does not exist in the control plane \
             (or belongs to another organization): fix or remove the annotation"
        ),
        Refusal::NothingToObserve { name } => format!(
            "there is no queue {name:?} (nor with the id of kubiya.ai/worker-queue-id) in the environment: \
             managementPolicy Observe never creates one; create it, fix the name or id, or set managementPolicy: Full"
        ),
        Refusal::CreateRaced { name } => format!(
            "the name {name:?} was taken when creating the queue, and no queue had it a moment later (deleted meanwhile?)"
        ),
        Refusal::OtherEnvironment { which } => format!(
            "the queue {which} belongs to another environment than the one of spec.environmentRef: a queue is only \
             managed in its Environment's environment; if kubiya.ai/worker-queue-id names it, fix or remove the \
             annotation; if the Environment now manages another environment, delete this WorkerQueue (annotated \
             kubiya.ai/deletion-policy=Orphan to leave the old queue) and apply it again"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Owner {
        Owner {
            cluster: "c1".into(),
            uid: "u1".into(),
            namespace: "team-a".into(),
            namespace_uid: "nsu".into(),
            name: "gpu".into(),
        }
    }

    #[test]
    fn a_refused_deletion_is_retried_with_the_way_out_and_a_bad_spec_is_not() {
        let refused = |status| {
            controlplane::Error::api(
                "DELETE",
                "/q",
                status,
                "Cannot delete worker queue with 1 active workers".into(),
                None,
            )
        };
        let e = Error::DeleteRemote { source: refused(400) };
        assert_eq!((e.reason(), e.is_permanent()), ("DeletionRefused", false));
        assert!(e.explain().contains("1 active workers") && e.explain().contains("deletion-policy=Orphan"));
        let bad = Error::CreateRemote { source: refused(422) };
        assert_eq!((bad.reason(), bad.is_permanent()), ("Rejected", true));
        let gone = Error::CreateRemote { source: refused(404) };
        assert_eq!((gone.reason(), gone.is_permanent()), ("EnvironmentNotFound", true));
    }

    #[test]
    fn refusals_name_nothing_outside_the_namespace() {
        let elsewhere = Owner {
            namespace: "team-b".into(),
            namespace_uid: "nsb".into(),
            name: "secret-q".into(),
            uid: "u9".into(),
            ..me()
        };
        let e = Error::refused(
            Refusal::OwnedElsewhere {
                which: "q1".into(),
                elsewhere: Elsewhere::LiveOwner(elsewhere.clone()),
            },
            me(),
        );
        let text = e.to_string();
        assert!(!text.contains("team-b") && !text.contains("secret-q"), "{text}");
        assert!(text.contains("another resource of this cluster"), "{text}");
        let same = Owner { uid: "u8".into(), name: "old".into(), ..me() };
        let e = Error::refused(
            Refusal::NameConflict { name: "gpu".into(), elsewhere: Elsewhere::Released(same) },
            me(),
        );
        assert!(e.to_string().contains("WorkerQueue old"), "{e}");
        assert_eq!(e.reason(), "NameConflict");
    }
}
