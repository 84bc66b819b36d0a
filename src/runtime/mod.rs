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

use futures::Stream;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

/// What `rx` receives, as a stream.
pub(crate) fn received<T: Clone + Send + 'static>(rx: Receiver<T>) -> impl Stream<Item = T> + use<T> {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(item) => return Some((item, rx)),
                // Too many at once: some were missed, which the resync catches up with.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    })
}
