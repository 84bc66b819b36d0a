//! The Kubernetes kit both controllers use: finalizers, kstatus conditions, Events, the status
//! merge patch, what the operator reads of namespaces, small indexes of watched objects, who
//! wrote which field, and what a failed Kubernetes call was. Talks to the Kubernetes API; knows nothing of Environments,
//! connections or the control plane.

pub mod conditions;
mod error;
pub mod events;
pub mod fields;
pub mod finalizer;
pub mod index;
pub mod namespaces;
pub mod status;

pub use error::{Error, Op, failed};
