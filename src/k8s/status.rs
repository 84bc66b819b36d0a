//! Writing status: a JSON merge patch of the `/status` subresource, sent only when something
//! changed. (A merge patch costs the API server less than a server-side apply, which matters at
//! thousands of objects; lists such as conditions are replaced whole.)

use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::{Error, Op};

/// A merge patch from `old` to `new` status: every field of `new`, and an explicit null for each
/// field `old` had that `new` has not.
pub fn merge_patch<S: Serialize>(old: Option<&S>, new: &S) -> Value {
    let mut fields = match serde_json::to_value(new) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    if let Some(Ok(Value::Object(old))) = old.map(serde_json::to_value) {
        for key in old.keys() {
            fields.entry(key.clone()).or_insert(Value::Null);
        }
    }
    serde_json::json!({ "status": fields })
}

/// Sends `patch` to the status subresource of `name`.
pub async fn patch<K>(api: &Api<K>, name: &str, patch: Value) -> Result<(), Error>
where
    K: Clone + DeserializeOwned + Debug,
{
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(drop)
        .map_err(super::failed(Op::WriteStatus))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct S {
        #[serde(skip_serializing_if = "Option::is_none")]
        environment_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    }

    #[test]
    fn a_merge_patch_clears_what_is_gone() {
        let old = S { message: Some("m".into()), environment_id: Some("id".into()) };
        let new = S { environment_id: Some("id".into()), message: None };
        assert_eq!(
            merge_patch(Some(&old), &new),
            json!({"status": {"environmentId": "id", "message": null}})
        );
        assert_eq!(merge_patch(None, &new), json!({"status": {"environmentId": "id"}}));
    }
}
