//! Reconcile errors: which operation failed, whether waiting can fix it, and what a human should
//! do about it. Messages never contain the API key or a worker token.

use kube::runtime::finalizer;

use crate::controlplane;

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
    #[error("fetching the worker command failed")]
    WorkerCommand {
        #[source]
        source: controlplane::Error,
    },
    #[error(
        "a control-plane environment named {name:?} already exists and was not created for this \
         resource: choose another spec.name, or delete that environment"
    )]
    NameConflict { name: String },
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
        "the environment {id} is managed by Environment {owner} (its owner marker in settings): \
         two resources must not manage one environment"
    )]
    OwnedElsewhere { id: String, owner: String },
    #[error("writing the worker Secret failed")]
    WriteSecret {
        #[source]
        source: kube::Error,
    },
    #[error("writing status failed")]
    WriteStatus {
        #[source]
        source: kube::Error,
    },
    #[error("updating the finalizer failed")]
    Finalizer {
        #[source]
        source: kube::Error,
    },
    #[error("the object has no name or namespace")]
    Unnamed,
}

impl Error {
    /// Unwraps kube's finalizer wrapper so that callers see our own variants.
    pub fn from_finalizer(e: finalizer::Error<Error>) -> Self {
        match e {
            finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
            finalizer::Error::AddFinalizer(source) | finalizer::Error::RemoveFinalizer(source) => {
                Error::Finalizer { source }
            }
            finalizer::Error::UnnamedObject | finalizer::Error::InvalidFinalizer => Error::Unnamed,
        }
    }

    fn control_plane(&self) -> Option<&controlplane::Error> {
        match self {
            Error::GetRemote { source }
            | Error::CreateRemote { source }
            | Error::FindRemote { source }
            | Error::UpdateRemote { source }
            | Error::DeleteRemote { source }
            | Error::WorkerCommand { source } => Some(source),
            _ => None,
        }
    }

    /// Permanent errors need a human: retrying without a change cannot succeed.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::NameConflict { .. }
            | Error::SecretConflict { .. }
            | Error::AdoptMissing { .. }
            | Error::OwnedElsewhere { .. }
            | Error::Unnamed => true,
            _ => self.control_plane().is_some_and(|e| !e.is_retryable()),
        }
    }

    /// How long the server asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.control_plane().and_then(controlplane::Error::retry_after)
    }

    /// The CamelCase reason used in conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::NameConflict { .. } => "NameConflict",
            Error::AdoptMissing { .. } => "AdoptionFailed",
            Error::OwnedElsewhere { .. } => "OwnedElsewhere",
            Error::SecretConflict { .. } => "SecretConflict",
            Error::WriteSecret { .. } | Error::WriteStatus { .. } | Error::Finalizer { .. } => {
                "KubernetesApiError"
            }
            Error::Unnamed => "InvalidObject",
            _ => match self.control_plane().and_then(controlplane::Error::status) {
                Some(401) => "Unauthorized",
                Some(403) => "Forbidden",
                Some(400 | 409 | 422) => "Rejected",
                Some(500) if self.is_permanent() => "Rejected",
                Some(404) => "NotFound",
                _ => "ControlPlaneUnavailable",
            },
        }
    }

    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::GetRemote { .. } => "get_remote",
            Error::CreateRemote { .. } => "create_remote",
            Error::FindRemote { .. } => "find_remote",
            Error::UpdateRemote { .. } => "update_remote",
            Error::DeleteRemote { .. } => "delete_remote",
            Error::WorkerCommand { .. } => "worker_command",
            Error::NameConflict { .. } => "name_conflict",
            Error::AdoptMissing { .. } => "adopt_missing",
            Error::OwnedElsewhere { .. } => "owned_elsewhere",
            Error::SecretConflict { .. } => "secret_conflict",
            Error::WriteSecret { .. } => "write_secret",
            Error::WriteStatus { .. } => "write_status",
            Error::Finalizer { .. } => "finalizer",
            Error::Unnamed => "unnamed",
        }
    }

    /// The whole cause chain in one line, with advice where the cause is one a user can fix.
    pub fn explain(&self) -> String {
        let mut text = crate::error_chain(self);
        let advice = match self.reason() {
            "Unauthorized" => " (check the API key the operator runs with: KUBIYA_API_KEY)",
            "Forbidden" => " (the operator's API key may not manage environments)",
            "Rejected" if !matches!(self, Error::DeleteRemote { .. }) => " (fix the Environment spec)",
            "NotFound" => " (check the control-plane URL the operator runs with)",
            _ if !self.is_permanent() => " (will retry)",
            _ => "",
        };
        text.push_str(advice);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(status: u16) -> controlplane::Error {
        controlplane::Error::Api {
            method: "POST",
            route: "/api/v1/environments",
            status,
            detail: "body.name: String should have at least 2 characters".into(),
            retry_after: None,
        }
    }

    #[test]
    fn classification_and_reasons() {
        let e = Error::CreateRemote { source: cp(422) };
        assert!(e.is_permanent());
        assert_eq!(e.reason(), "Rejected");
        assert_eq!(
            e.explain(),
            "creating the remote environment failed: POST /api/v1/environments: control plane \
             answered 422: body.name: String should have at least 2 characters (fix the Environment spec)"
        );
        let e = Error::GetRemote { source: cp(401) };
        assert!(e.is_permanent());
        assert_eq!(e.reason(), "Unauthorized");
        let e = Error::GetRemote { source: cp(503) };
        assert!(!e.is_permanent());
        assert_eq!(e.reason(), "ControlPlaneUnavailable");
        assert!(e.explain().ends_with("(will retry)"));
        assert!(Error::NameConflict { name: "x".into() }.is_permanent());
    }
}
