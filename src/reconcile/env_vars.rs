//! The env vars a remote environment gets: the spec's own values (`envVars`) merged with those
//! read from Secrets of the Environment's namespace (`env[].valueFrom.secretKeyRef`, `envFrom`),
//! as a Pod's container gets them. Values from Secrets exist only for the length of a pass: they
//! go into the body sent to the control plane and nowhere else; what a pass remembers of them is
//! a keyed hash, in memory.
//!
//! [`merge`] is pure; [`resolve`] reads the Secrets for it.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

use super::context::Context;
use super::error::Error;
use crate::k8s::{self, Op};
use crate::resource::{Environment, ExecutionEnvironment, limits};

/// What was read of the Secrets a spec names, by name: its data, or None when there is no such
/// Secret.
pub type Read = BTreeMap<String, Option<BTreeMap<String, ByteString>>>;

/// Why the env vars cannot be made: nothing is sent while one of these holds. Names Secrets and
/// keys, never a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// No Secret of that name in the namespace, or (with `key`) no such key in it.
    NotFound { secret: String, key: Option<String> },
    /// The key's value cannot be an environment variable.
    Unusable { secret: String, key: String, why: &'static str },
    /// More variables than the control plane is sent.
    TooMany { count: usize },
}

/// The env vars of `exec`, with the Secrets' values from `read`: `envFrom` in order (a later
/// Secret wins), then `envVars` and `env` over them (the schema keeps those two apart). Keys of
/// an `envFrom` Secret that make no shell variable name are left out, as a Pod leaves them out.
pub fn merge(exec: &ExecutionEnvironment, read: &Read) -> Result<BTreeMap<String, String>, Problem> {
    let data = |secret: &str| match read.get(secret) {
        Some(Some(data)) => Ok(data),
        _ => Err(Problem::NotFound { secret: secret.to_owned(), key: None }),
    };
    let mut vars = BTreeMap::new();
    for from in &exec.env_from {
        let secret = &from.secret_ref.name;
        for (key, value) in data(secret)? {
            let name = format!("{}{key}", from.prefix.as_deref().unwrap_or_default());
            if limits::is_env_var_name(&name) {
                vars.insert(name, text(secret, key, value)?);
            }
        }
    }
    vars.extend(exec.env_vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    for var in &exec.env {
        let r = &var.value_from.secret_key_ref;
        let value = data(&r.name)?
            .get(&r.key)
            .ok_or_else(|| Problem::NotFound { secret: r.name.clone(), key: Some(r.key.clone()) })?;
        vars.insert(var.name.clone(), text(&r.name, &r.key, value)?);
    }
    if vars.len() > limits::EXECUTION_ITEMS {
        return Err(Problem::TooMany { count: vars.len() });
    }
    Ok(vars)
}

/// A Secret's value as an environment variable's: UTF-8, of a bounded size.
fn text(secret: &str, key: &str, value: &ByteString) -> Result<String, Problem> {
    let unusable = |why| Problem::Unusable { secret: secret.to_owned(), key: key.to_owned(), why };
    if value.0.len() > limits::ENV_VALUE_BYTES {
        return Err(unusable("it is longer than 32 KiB"));
    }
    String::from_utf8(value.0.clone()).map_err(|_| unusable("it is not UTF-8 text"))
}

/// The env vars a pass sends, and whether they depend on Secrets.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub vars: BTreeMap<String, String>,
    /// A keyed hash of `vars` (the key is this process's, never written anywhere) when some come
    /// from Secrets: a change to it without a change of spec is a Secret's, not drift.
    pub fingerprint: Option<u64>,
}

/// Reads the Secrets `env` names (each once, only those) and merges their values.
pub async fn resolve(env: &Environment, ctx: &Context) -> Result<Resolved, Error> {
    let Some(exec) = env.spec.execution_environment.as_ref() else {
        return Ok(Resolved { vars: BTreeMap::new(), fingerprint: None });
    };
    let names = exec.secret_names();
    if names.is_empty() {
        return Ok(Resolved { vars: exec.env_vars.clone(), fingerprint: None });
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.kube.clone(), &env.namespace().ok_or(Error::Unnamed)?);
    let mut read = Read::new();
    for name in names {
        let secret =
            secrets.get_opt(name).await.map_err(|source| k8s::Error::new(Op::ReadEnvSecret, source))?;
        read.insert(name.to_owned(), secret.map(|s| s.data.unwrap_or_default()));
    }
    let vars = merge(exec, &read).map_err(Error::EnvSecret)?;
    let fingerprint = Some(fingerprint(&vars));
    Ok(Resolved { vars, fingerprint })
}

/// `vars` hashed with this process's random key: equal maps hash equal, and the hash says
/// nothing about a value to anyone without the key.
pub fn fingerprint(vars: &BTreeMap<String, String>) -> u64 {
    static KEY: OnceLock<RandomState> = OnceLock::new();
    KEY.get_or_init(RandomState::new).hash_one(vars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{EnvFromSource, EnvVar, EnvVarSource, SecretKeySelector, WorkerSecretRef};

    fn bytes(s: &str) -> ByteString {
        ByteString(s.as_bytes().to_vec())
    }

    fn read(secrets: &[(&str, &[(&str, &str)])]) -> Read {
        secrets
            .iter()
            .map(|(name, data)| {
                (name.to_string(), Some(data.iter().map(|(k, v)| (k.to_string(), bytes(v))).collect()))
            })
            .collect()
    }

    fn from(secret: &str, prefix: Option<&str>) -> EnvFromSource {
        EnvFromSource {
            prefix: prefix.map(str::to_owned),
            secret_ref: WorkerSecretRef { name: secret.into() },
        }
    }

    fn var(name: &str, secret: &str, key: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: EnvVarSource {
                secret_key_ref: SecretKeySelector { name: secret.into(), key: key.into() },
            },
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn values_come_from_secrets_envfrom_first_then_the_specs_own_and_env_over_them() {
        let exec = ExecutionEnvironment {
            env_vars: vars(&[("LOG", "debug"), ("DB_HOST", "db")]),
            env: vec![var("DB_PASSWORD", "db", "password")],
            env_from: vec![from("common", None), from("db", Some("DB_")), from("late", None)],
            ..Default::default()
        };
        let read = read(&[
            ("common", &[("LOG", "info"), ("REGION", "eu"), ("A", "common")]),
            ("db", &[("password", "hunter2"), ("HOST", "from-secret"), ("tls.crt", "x")]),
            ("late", &[("A", "late")]),
        ]);
        let got = merge(&exec, &read).unwrap();
        assert_eq!(
            got,
            vars(&[
                ("A", "late"),
                ("DB_HOST", "db"),
                ("DB_PASSWORD", "hunter2"),
                ("DB_password", "hunter2"),
                ("LOG", "debug"),
                ("REGION", "eu"),
            ]),
            "a later Secret wins, the spec's own values win, `DB_tls.crt` is no name and is left out"
        );
        assert_eq!(exec.secret_names(), ["common", "db", "late"]);
        assert!(exec.uses_secret("db") && exec.uses_secret("late") && !exec.uses_secret("other"));
    }

    #[test]
    fn a_missing_secret_or_key_names_them_and_nothing_is_made() {
        let exec = ExecutionEnvironment { env: vec![var("P", "db", "password")], ..Default::default() };
        let none: Read = BTreeMap::from([("db".to_owned(), None)]);
        assert_eq!(merge(&exec, &none), Err(Problem::NotFound { secret: "db".into(), key: None }));
        assert_eq!(
            merge(&exec, &read(&[("db", &[("user", "u")])])),
            Err(Problem::NotFound { secret: "db".into(), key: Some("password".into()) })
        );
        let exec = ExecutionEnvironment { env_from: vec![from("gone", None)], ..Default::default() };
        assert_eq!(merge(&exec, &Read::new()), Err(Problem::NotFound { secret: "gone".into(), key: None }));
    }

    #[test]
    fn a_value_that_is_no_text_or_too_long_is_refused_without_saying_it() {
        let exec = ExecutionEnvironment { env: vec![var("P", "s", "k")], ..Default::default() };
        let mut bad = read(&[("s", &[])]);
        bad.get_mut("s").unwrap().as_mut().unwrap().insert("k".into(), ByteString(vec![0xff, 0xfe]));
        assert!(matches!(merge(&exec, &bad), Err(Problem::Unusable { why: "it is not UTF-8 text", .. })));
        let long = "x".repeat(limits::ENV_VALUE_BYTES + 1);
        let got = merge(&exec, &read(&[("s", &[("k", &long)])]));
        assert!(matches!(got, Err(Problem::Unusable { why: "it is longer than 32 KiB", .. })), "{got:?}");
        let fits = "x".repeat(limits::ENV_VALUE_BYTES);
        assert!(merge(&exec, &read(&[("s", &[("k", &fits)])])).is_ok());
    }

    #[test]
    fn more_variables_than_the_control_plane_takes_are_refused() {
        let many: Vec<(String, String)> =
            (0..=limits::EXECUTION_ITEMS).map(|i| (format!("V{i}"), "v".into())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let exec = ExecutionEnvironment { env_from: vec![from("big", None)], ..Default::default() };
        let count = limits::EXECUTION_ITEMS + 1;
        assert_eq!(merge(&exec, &read(&[("big", &many)])), Err(Problem::TooMany { count }));
        assert!(merge(&exec, &read(&[("big", &many[1..])])).is_ok(), "exactly the limit");
    }

    #[test]
    fn the_fingerprint_follows_the_values() {
        let a = vars(&[("P", "hunter2")]);
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
        assert_ne!(fingerprint(&a), fingerprint(&vars(&[("P", "hunter3")])));
    }
}
