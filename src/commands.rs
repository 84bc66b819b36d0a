//! The one-shot commands: `crd` and `export`. Each prints its result on stdout, progress and
//! errors on stderr, and says how it ended.

use std::process::ExitCode;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use url::Url;

use crate::config::{ExportArgs, ExportDeletionPolicy, ExportFormat};
use crate::controlplane::{self, ApiKey};
use crate::export;
use crate::resource::{self, ClusterConnection, Connection, DeletionPolicy};

/// Prints every CRD (or the one shipped as `crds/<file>`), as multi-document YAML.
pub fn crd(file: Option<&str>) -> ExitCode {
    let crds = resource::crds().into_iter().filter(|(f, _)| file.is_none_or(|want| *f == want));
    let mut printed = 0;
    for (_, crd) in crds {
        match resource::crd_yaml(&crd) {
            Ok(yaml) => print!("{}{yaml}", if printed > 0 { "---\n" } else { "" }),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
        printed += 1;
    }
    if printed == 0 {
        eprintln!("error: no CRD is shipped as {file:?}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Why an export could not be made. Never carries the key.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(
        "no API key: set KUBIYA_API_KEY or --api-key-file, or use a connection of the cluster \
         (--connection NAMESPACE/NAME, --cluster-connection NAME)"
    )]
    NoKey,
    #[error("--connection wants NAMESPACE/NAME, not {0:?}")]
    ConnectionName(String),
    #[error("cannot reach the Kubernetes API (kubeconfig or in-cluster config)")]
    Kube(#[source] kube::Error),
    #[error("cannot read {what}")]
    Read {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Secret(String),
    #[error("the connection's baseUrl {0:?} is not a URL")]
    Url(String),
    #[error("cannot use the control plane")]
    Client(#[source] controlplane::BuildError),
    #[error(transparent)]
    Run(#[from] export::Error),
}

/// `kubiya-operator export`.
pub async fn export(args: ExportArgs) -> ExitCode {
    match try_export(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", crate::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

async fn try_export(args: ExportArgs) -> Result<(), ExportError> {
    let (base_url, key) = credentials(&args).await?;
    let client =
        controlplane::Client::new(controlplane::ClientConfig::new(base_url, key, args.request_timeout))
            .map_err(ExportError::Client)?;
    let opts = export::Options {
        namespace: args.namespace.clone(),
        observe: args.observe,
        deletion_policy: match args.deletion_policy {
            ExportDeletionPolicy::Orphan => DeletionPolicy::Orphan,
            ExportDeletionPolicy::Delete => DeletionPolicy::Delete,
        },
        include_managed: args.include_managed,
        include_default: args.include_default,
        env_to_secrets: args.env_to_secrets,
    };
    export::run(&client, &opts, args.output == ExportFormat::Json, args.secrets_out.as_deref()).await?;
    Ok(())
}

/// The control plane and key: a connection's of the cluster, or the flags'.
async fn credentials(args: &ExportArgs) -> Result<(Url, ApiKey), ExportError> {
    let (base_url, namespace, secret, kube) = match (&args.connection, &args.cluster_connection) {
        (None, None) => {
            return Ok((
                args.control_plane.url.clone(),
                args.control_plane.api_key()?.ok_or(ExportError::NoKey)?,
            ));
        }
        (Some(full), _) => {
            let (ns, name) = full.split_once('/').ok_or_else(|| ExportError::ConnectionName(full.clone()))?;
            let kube = kube::Client::try_default().await.map_err(ExportError::Kube)?;
            let c = Api::<Connection>::namespaced(kube.clone(), ns)
                .get(name)
                .await
                .map_err(|source| ExportError::Read { what: format!("Connection {full}"), source })?;
            let r = c.spec.api_key_secret_ref;
            (c.spec.base_url, ns.to_owned(), (r.name, r.key), kube)
        }
        (None, Some(name)) => {
            let kube = kube::Client::try_default().await.map_err(ExportError::Kube)?;
            let c = Api::<ClusterConnection>::all(kube.clone())
                .get(name)
                .await
                .map_err(|source| ExportError::Read { what: format!("ClusterConnection {name}"), source })?;
            let r = c.spec.api_key_secret_ref;
            (c.spec.base_url, r.namespace, (r.name, r.key), kube)
        }
    };
    let what = format!("Secret {namespace}/{}", secret.0);
    let s = Api::<Secret>::namespaced(kube, &namespace)
        .get(&secret.0)
        .await
        .map_err(|source| ExportError::Read { what: what.clone(), source })?;
    let value = s
        .data
        .as_ref()
        .and_then(|d| d.get(&secret.1))
        .ok_or_else(|| ExportError::Secret(format!("{what} has no key {:?}", secret.1)))?;
    let base_url = match base_url {
        Some(u) => Url::parse(&u).map_err(|_| ExportError::Url(u))?,
        None => args.control_plane.url.clone(),
    };
    Ok((base_url, ApiKey::new(String::from_utf8_lossy(&value.0))))
}
