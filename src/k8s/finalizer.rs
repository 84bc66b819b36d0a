//! Finalizers, added and removed with JSON patches that test the list they change. Not
//! kube-runtime's `finalizer()`: that one removes the finalizer after any successful cleanup, and
//! a paused deletion (or a connection still in use) must hold it. Talks to the Kubernetes API.

use std::fmt::Debug;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, TestOperation};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{Error, Op};

/// Whether the object carries `finalizer`.
pub fn present<K: Resource>(obj: &K, finalizer: &str) -> bool {
    obj.finalizers().iter().any(|f| f == finalizer)
}

/// Adds `finalizer`. The JSON patch tests the list it extends, so that a concurrent change fails
/// the pass (and is retried) instead of being overwritten.
pub async fn add<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let list = PointerBuf::from_tokens(["metadata", "finalizers"]);
    let (test, add) = match &obj.meta().finalizers {
        None => (json!(null), AddOperation { path: list.clone(), value: json!([finalizer]) }),
        Some(current) => (
            json!(current),
            AddOperation {
                path: PointerBuf::from_tokens(["metadata", "finalizers", "-"]),
                value: json!(finalizer),
            },
        ),
    };
    let patch =
        vec![PatchOperation::Test(TestOperation { path: list, value: test }), PatchOperation::Add(add)];
    write(api, obj, patch).await
}

/// Removes `finalizer`, which lets the API server finish the deletion.
pub async fn remove<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let Some(i) = obj.finalizers().iter().position(|f| f == finalizer) else { return Ok(()) };
    let path = PointerBuf::from_tokens(["metadata".to_owned(), "finalizers".to_owned(), i.to_string()]);
    let patch = vec![
        PatchOperation::Test(TestOperation { path: path.clone(), value: json!(finalizer) }),
        PatchOperation::Remove(RemoveOperation { path }),
    ];
    match write(api, obj, patch).await {
        // Gone already: the deletion is done.
        Err(e) if e.code() == Some(404) => Ok(()),
        other => other,
    }
}

async fn write<K>(api: &Api<K>, obj: &K, patch: Vec<PatchOperation>) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    api.patch(&obj.name_any(), &PatchParams::default(), &Patch::<()>::Json(json_patch::Patch(patch)))
        .await
        .map(drop)
        .map_err(super::failed(Op::Finalizer))
}
