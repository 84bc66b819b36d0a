//! One object (an Environment, a WorkerQueue) the operator cannot decode must not stop the others.
//!
//! kube decodes a whole list (and each watch event) in one go, so one bad object fails the
//! watcher for everyone, at every restart. kube's own `DeserializeGuard` does not help with the
//! failure that anyone allowed to create an Environment can cause: `settings` nested past
//! serde_json's recursion limit (128 levels), which the API server accepts and no structural
//! schema can bound. Its guard buffers the object first, and that buffering hits the limit.
//!
//! [`Guarded`] instead takes each object as raw JSON text (serde_json skips a value without
//! recursing, so no depth limit applies there) and decodes it on its own: a failure is confined
//! to that object, which keeps its metadata so that it can be reported and deleted.
//!
//! The same holds for size: `settings` and `mcpServers` are free-form, so no schema bounds their
//! bytes, and the API server takes objects up to etcd's 1.5 MiB. An object whose `spec` is over
//! [`MAX_SPEC_BYTES`] is kept as its metadata only, so that a tenant's hundred 1.4 MB
//! Environments cost the cache kilobytes, not 140 MB. Pure: no client.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::Environment;

/// The largest `spec` the operator reads, as JSON. A thousand times a typical Environment's, and
/// more than `kubectl apply` can send (its last-applied annotation holds the spec, and the API
/// server takes 256 KiB of annotations).
pub const MAX_SPEC_BYTES: usize = 256 * 1024;

/// An annotation `kubectl apply` writes with a copy of the whole object, which the operator
/// never reads: not kept in the caches.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// An object as read from the API server: decoded, or why it could not be.
#[derive(Clone, Debug)]
pub struct Guarded<K = Environment>(pub Result<K, Undecodable>);

/// An object that could not be decoded, with its metadata.
#[derive(Clone, Debug)]
pub struct Undecodable {
    /// What the decoder said (a position and a reason; never the object's content).
    pub error: String,
    pub metadata: ObjectMeta,
}

impl<K> Guarded<K> {
    /// The decoded object, if it could be.
    pub fn decoded(&self) -> Option<&K> {
        self.0.as_ref().ok()
    }
}

impl<'de, K: serde::de::DeserializeOwned> Deserialize<'de> for Guarded<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        // Only an object that could be too large pays for reading its fields one by one.
        if raw.get().len() <= MAX_SPEC_BYTES
            && let Ok(env) = serde_json::from_str::<K>(raw.get())
        {
            return Ok(Guarded(Ok(env)));
        }
        let mut object: BTreeMap<String, Box<RawValue>> =
            serde_json::from_str(raw.get()).map_err(D::Error::custom)?;
        drop(raw);
        let metadata = slim_metadata(object.get("metadata").map(AsRef::as_ref)).map_err(D::Error::custom)?;
        let spec = object.get("spec").map_or(0, |s| s.get().len());
        if spec > MAX_SPEC_BYTES {
            let error = format!(
                "its spec is {} KiB of JSON, over the {} KiB the operator reads (free-form fields \
                 such as settings have no size bound in the schema)",
                spec.div_ceil(1024),
                MAX_SPEC_BYTES / 1024
            );
            let metadata = serde_json::from_str(metadata.get()).map_err(D::Error::custom)?;
            return Ok(Guarded(Err(Undecodable { error, metadata })));
        }
        // `metadata.managedFields` mirrors the shape of everything written, as deep as the
        // deepest field, and the operator never reads it: without it, the object may decode.
        object.insert("metadata".to_owned(), metadata.clone());
        let slim = serde_json::value::to_raw_value(&object).map_err(D::Error::custom)?;
        match serde_json::from_str::<K>(slim.get()) {
            Ok(env) => Ok(Guarded(Ok(env))),
            Err(e) => {
                let metadata = serde_json::from_str(metadata.get()).map_err(D::Error::custom)?;
                Ok(Guarded(Err(Undecodable { error: e.to_string(), metadata })))
            }
        }
    }
}

/// An object's metadata without what the operator never reads and can be its largest part:
/// managedFields and the last-applied annotation.
fn slim_metadata(metadata: Option<&RawValue>) -> serde_json::Result<Box<RawValue>> {
    let mut metadata: BTreeMap<String, Box<RawValue>> = match metadata {
        Some(m) => serde_json::from_str(m.get())?,
        None => BTreeMap::new(),
    };
    metadata.remove("managedFields");
    if let Some(annotations) = metadata.get("annotations") {
        let mut annotations: BTreeMap<String, Box<RawValue>> = serde_json::from_str(annotations.get())?;
        if annotations.remove(LAST_APPLIED).is_some() {
            metadata.insert("annotations".to_owned(), serde_json::value::to_raw_value(&annotations)?);
        }
    }
    serde_json::value::to_raw_value(&metadata)
}

/// Drops from a cached object's metadata what [`slim_metadata`] drops: the operator never reads
/// it, and it can be most of the object's bytes.
pub fn slim(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
    }
}

impl<K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>> Resource for Guarded<K> {
    type DynamicType = ();
    type Scope = kube::core::NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        match &self.0 {
            Ok(env) => env.meta(),
            Err(bad) => &bad.metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match &mut self.0 {
            Ok(env) => env.meta_mut(),
            Err(bad) => &mut bad.metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
    }

    /// An Environment whose managedFields mirror its settings, as the API server writes them.
    fn object(name: &str, settings: &str) -> String {
        let fields = settings.replace("{\"a\":", "{\"f:a\":").replace(":1}", ":{}}");
        format!(
            r#"{{"apiVersion":"kubiya.ai/v1alpha1","kind":"Environment",
                "metadata":{{"name":"{name}","namespace":"ns","uid":"u-{name}","managedFields":[
                    {{"manager":"kubectl","operation":"Update","fieldsType":"FieldsV1",
                      "fieldsV1":{{"f:spec":{{"f:settings":{fields}}}}}}}]}},
                "spec":{{"settings":{settings}}}}}"#
        )
    }

    #[test]
    fn a_list_with_one_object_nested_too_deep_still_decodes_the_others() {
        let list = format!(
            r#"{{"apiVersion":"v1","kind":"List","metadata":{{}},"items":[{},{},{},{}]}}"#,
            object("ok-1", "{}"),
            object("deep", &nested(200)),
            object("ok-2", &nested(20)),
            // Decodes only without its managedFields, which are deeper than its spec.
            object("ok-3", &nested(123)),
        );
        // What kube does with a list answer.
        let list: kube::core::ObjectList<Guarded> = serde_json::from_str(&list).unwrap();
        let names: Vec<_> =
            list.items.iter().map(|g| (g.meta().name.clone().unwrap(), g.0.is_ok())).collect();
        assert_eq!(
            names,
            [
                ("ok-1".to_owned(), true),
                ("deep".to_owned(), false),
                ("ok-2".to_owned(), true),
                ("ok-3".to_owned(), true)
            ]
        );
        let bad = list.items[1].0.as_ref().unwrap_err();
        assert_eq!(bad.metadata.uid.as_deref(), Some("u-deep"));
        assert!(bad.error.contains("recursion limit"), "{}", bad.error);
    }

    #[test]
    fn a_spec_over_the_limit_is_kept_as_its_slim_metadata_only() {
        let settings = format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_SPEC_BYTES));
        let big = object("big", &settings).replace(
            r#""uid":"u-big","#,
            &format!(r#""uid":"u-big","annotations":{{"{LAST_APPLIED}":"{{}}","keep":"me"}},"#),
        );
        let g: Guarded = serde_json::from_str(&big).unwrap();
        let bad = g.0.unwrap_err();
        assert_eq!(bad.metadata.uid.as_deref(), Some("u-big"));
        assert_eq!(bad.metadata.managed_fields, None);
        let annotations = bad.metadata.annotations.unwrap();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["keep"], "kubectl's copy dropped");
        assert_eq!(bad.error.matches("257 KiB of JSON, over the 256 KiB").count(), 1, "{}", bad.error);
        // Just under the limit, it decodes.
        let settings = format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_SPEC_BYTES - 40));
        let g: Guarded = serde_json::from_str(&object("fits", &settings)).unwrap();
        assert!(g.0.is_ok());
    }

    #[test]
    fn an_object_large_by_its_metadata_only_decodes_without_it() {
        let copy = "y".repeat(MAX_SPEC_BYTES);
        let large = object("large", "{}").replace(
            r#""uid":"u-large","#,
            &format!(r#""uid":"u-large","annotations":{{"{LAST_APPLIED}":"{copy}"}},"#),
        );
        let g: Guarded = serde_json::from_str(&large).unwrap();
        let env = g.0.unwrap();
        assert_eq!(env.metadata.annotations.unwrap_or_default().get(LAST_APPLIED), None);
        let mut meta = ObjectMeta {
            annotations: Some(BTreeMap::from([(LAST_APPLIED.to_owned(), copy), ("k".into(), "v".into())])),
            managed_fields: Some(vec![Default::default()]),
            ..Default::default()
        };
        slim(&mut meta);
        assert_eq!(meta.managed_fields, None);
        assert_eq!(meta.annotations.unwrap().len(), 1);
    }

    #[test]
    fn a_watch_event_with_an_undecodable_object_still_decodes() {
        let line = format!(
            r#"{{"type":"ADDED","object":{}}}"#,
            object("x", r#"{"a":1}"#).replace("{\"a\":1}", "\"not an object\"")
        );
        let event: kube::core::WatchEvent<Guarded> = serde_json::from_str(&line).unwrap();
        let kube::core::WatchEvent::Added(g) = event else { panic!("added") };
        assert!(g.0.unwrap_err().error.contains("invalid type"));
    }
}
