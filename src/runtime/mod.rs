//! Running the operator: telemetry, the controller and shutdown. Wiring only; decisions live in
//! `reconcile`.

mod connections;
mod controller;
mod environments;
mod http;
mod leader;
mod queues;
pub mod telemetry;

pub use controller::run;
