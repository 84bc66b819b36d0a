//! A failed Kubernetes API call: which operation, and why. Every one is transient for the
//! reconcile (retried with backoff): the API server coming back, or an RBAC fix, heals it.

/// What the operator was doing with the Kubernetes API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    ReadNamespace,
    ReadSecret,
    ReadEnvSecret,
    WriteSecret,
    DeleteSecret,
    ReadOwner,
    ReadCrd,
    WriteStatus,
    Finalizer,
    ReadDeployment,
    WriteDeployment,
    DeleteDeployment,
}

impl Op {
    /// As the message says it.
    fn what(self) -> &'static str {
        match self {
            Op::ReadNamespace => "reading the namespace",
            Op::ReadSecret => "reading the Secret",
            Op::ReadEnvSecret => "reading a Secret named in spec.executionEnvironment",
            Op::WriteSecret => "writing the worker Secret",
            Op::DeleteSecret => "deleting the worker Secret",
            Op::ReadOwner => "checking whether the object named in the owner marker still exists",
            Op::ReadCrd => "reading the CustomResourceDefinition (is it being deleted?)",
            Op::WriteStatus => "writing status",
            Op::Finalizer => "updating the finalizer",
            Op::ReadDeployment => "reading the workers' Deployment",
            Op::WriteDeployment => "writing the workers' Deployment",
            Op::DeleteDeployment => "deleting the workers' Deployment",
        }
    }

    /// A bounded metric label.
    pub fn metric(self) -> &'static str {
        match self {
            Op::ReadNamespace => "read_namespace",
            Op::ReadSecret => "read_secret",
            Op::ReadEnvSecret => "read_env_secret",
            Op::WriteSecret => "write_secret",
            Op::DeleteSecret => "delete_secret",
            Op::ReadOwner => "read_owner",
            Op::ReadCrd => "read_crd",
            Op::WriteStatus => "write_status",
            Op::Finalizer => "finalizer",
            Op::ReadDeployment => "read_deployment",
            Op::WriteDeployment => "write_deployment",
            Op::DeleteDeployment => "delete_deployment",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{} failed", op.what())]
pub struct Error {
    pub op: Op,
    #[source]
    pub source: kube::Error,
}

impl Error {
    pub fn new(op: Op, source: kube::Error) -> Self {
        Error { op, source }
    }

    /// The API server's status code, if it answered.
    pub fn code(&self) -> Option<u16> {
        match &self.source {
            kube::Error::Api(s) => Some(s.code),
            _ => None,
        }
    }
}

/// Maps a failed call to [`Error`] for `op`: `api.get(..).await.map_err(k8s::failed(Op::ReadSecret))`.
pub fn failed(op: Op) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error { op, source }
}
