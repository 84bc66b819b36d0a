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

use futures::{Stream, StreamExt};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

/// The watch of a kind its users write, at most this many objects to a list page. kube reads a
/// page whole (and copies it) before decoding it, and any object can be near etcd's 1.5 MiB:
/// 10 of them are 15 MiB at once, twice, where the default page (500) could be 750 MiB. Measured
/// with `make bench-hostile`: a tenant's 100 Environments of 1.4 MB cost a relist 230 MiB with
/// the default page (and no spec limit), 53 MiB with pages of 20, 16 MiB with pages of 10. Small
/// pages cost a relist one request per 10 objects, which the watch's bookmarks make rare.
pub(crate) fn watched() -> kube::runtime::watcher::Config {
    kube::runtime::watcher::Config::default().page_size(10)
}

/// The objects a reflected watch applies, for a controller to reconcile: kube's
/// `applied_objects`, except that a relist's objects are given once the relist is done, from the
/// cache. kube's store takes a relist whole at its end (`InitDone`), while `applied_objects`
/// gives each object as its page comes: a pass asked for then finds the object missing from the
/// cache (or its old version) and is dropped. With pages of 10 that is every page but the last.
/// The objects are cloned from the cache one at a time, as the controller takes them.
pub(crate) fn applied<K, S>(events: S, store: Store<K>) -> impl Stream<Item = Result<K, watcher::Error>>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    events.flat_map(move |event| {
        let (now, relisted) = match event {
            Ok(watcher::Event::Apply(obj)) => (Some(Ok(obj)), Vec::new()),
            Ok(watcher::Event::InitDone) => (None, store.state()),
            Ok(watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::Delete(_)) => {
                (None, Vec::new())
            }
            Err(e) => (Some(Err(e)), Vec::new()),
        };
        futures::stream::iter(now.into_iter().chain(relisted.into_iter().map(|obj| Ok(K::clone(&obj)))))
    })
}

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
