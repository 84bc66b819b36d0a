//! End-to-end tests: the operator binary against the real test API server (started by
//! `tests/run.sh`) and the control-plane emulator, or the real control-plane server. Each file is
//! named for what its tests prove; `support` is their harness.

mod adoption;
mod apiserver_outage;
mod bad_manifests;
mod client_limits;
mod connections;
mod crash;
mod deletion;
mod drift;
mod env_secrets;
mod export;
mod faults;
mod first_status;
mod ha;
mod install;
mod leaks;
mod lifecycle;
mod name_conflicts;
mod observability;
mod ownership;
mod pass_timeout;
mod pause;
mod per_object_state;
mod real_server;
mod restart_cost;
mod scope;
mod support;
mod tenancy;
mod undecodable;
mod worker_queues;
mod worker_secret;
mod workers;
