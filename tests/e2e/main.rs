//! End-to-end tests: the operator binary against the real test API server (started by
//! `tests/run.sh`) and the control-plane emulator, or the real control-plane server.

mod bad_input;
mod cluster;
mod connections;
mod crash;
mod export;
mod faults;
mod gitops;
mod ha;
mod hardening;
mod install;
mod lifecycle;
mod observability;
mod ownership;
mod real_server;
mod restart;
mod restart_cost;
mod scope;
mod semantics;
mod support;
