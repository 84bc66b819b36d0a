//! The Kubiya control plane's Environments API: a small typed client, its wire types and errors.
//!
//! Talks to the control plane over HTTP; knows nothing of Kubernetes.

mod client;
mod error;
mod wire;

pub use client::{ApiKey, BuildError, Client, ClientConfig, MAX_BODY};
pub use error::{Error, MAX_DETAIL, sanitize};
pub use wire::{
    EnvironmentBody, ExecutionEnvironmentBody, QueueBody, QueueCommand, RemoteEnvironment, RemoteQueue,
    WorkerCommand, WorkerToken, error_detail,
};
