//! The finalizer that keeps an Environment until its cleanup is done. Not kube-runtime's
//! `finalizer()`: that one removes the finalizer after any successful cleanup, and a paused
//! deletion must hold it. Talks to the Kubernetes API.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, TestOperation};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::{Context, Error};
use crate::resource::{FINALIZER, Guarded};

/// Whether the object carries the finalizer.
pub fn present(obj: &Guarded) -> bool {
    obj.finalizers().iter().any(|f| f == FINALIZER)
}

/// Adds the finalizer. The JSON patch tests the list it extends, so that a concurrent change fails
/// the pass (and is retried) instead of being overwritten.
pub async fn add(obj: &Guarded, ctx: &Context) -> Result<(), Error> {
    let list = PointerBuf::from_tokens(["metadata", "finalizers"]);
    let (test, add) = match &obj.meta().finalizers {
        None => (json!(null), AddOperation { path: list.clone(), value: json!([FINALIZER]) }),
        Some(current) => (
            json!(current),
            AddOperation {
                path: PointerBuf::from_tokens(["metadata", "finalizers", "-"]),
                value: json!(FINALIZER),
            },
        ),
    };
    let patch =
        vec![PatchOperation::Test(TestOperation { path: list, value: test }), PatchOperation::Add(add)];
    write(obj, ctx, patch).await.map(drop)
}

/// Removes the finalizer, which lets the API server finish the deletion.
pub async fn remove(obj: &Guarded, ctx: &Context) -> Result<(), Error> {
    let Some(i) = obj.finalizers().iter().position(|f| f == FINALIZER) else { return Ok(()) };
    let path = PointerBuf::from_tokens(["metadata".to_owned(), "finalizers".to_owned(), i.to_string()]);
    let patch = vec![
        PatchOperation::Test(TestOperation { path: path.clone(), value: json!(FINALIZER) }),
        PatchOperation::Remove(RemoveOperation { path }),
    ];
    match write(obj, ctx, patch).await {
        Ok(_) => Ok(()),
        // Gone already: the deletion is done.
        Err(Error::Finalizer { source: kube::Error::Api(s) }) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn write(obj: &Guarded, ctx: &Context, patch: Vec<PatchOperation>) -> Result<Guarded, Error> {
    let ns = obj.namespace().ok_or(Error::Unnamed)?;
    let api: Api<Guarded> = Api::namespaced(ctx.kube.clone(), &ns);
    api.patch(&obj.name_any(), &PatchParams::default(), &Patch::<()>::Json(json_patch::Patch(patch)))
        .await
        .map_err(|source| Error::Finalizer { source })
}
