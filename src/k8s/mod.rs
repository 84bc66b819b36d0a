//! The Kubernetes kit both controllers use: finalizers, kstatus conditions, Events, the status
//! merge patch, what the operator reads of namespaces, the versions of Secrets, and what a
//! failed Kubernetes call was. Talks to the Kubernetes API; knows nothing of Environments,
//! connections or the control plane.

pub mod conditions;
mod error;
pub mod events;
pub mod finalizer;
pub mod namespaces;
pub mod secret_versions;
pub mod status;

pub use error::{Error, Op, failed};
