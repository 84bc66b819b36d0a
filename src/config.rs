//! Command line and environment configuration. The only place that reads the environment.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use url::Url;

use crate::controlplane::ApiKey;

/// The worker image of a WorkerQueue whose `spec.workers.image` names none: the one built from
/// `deploy/worker/Containerfile` (the PyPI worker, pinned), published beside the operator's. The
/// Helm chart and the kustomize base pin the same.
pub const DEFAULT_WORKER_IMAGE: &str = "ghcr.io/kubiya-ai/kubiya-worker:1.0.2";

fn non_empty(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() { Err("empty namespace name".into()) } else { Ok(s.to_owned()) }
}

/// Whole seconds, at least 8: the Lease API counts in seconds, and the leader renews at half
/// the duration and must stop a margin before it ends, with time for retries in between.
fn lease_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.as_secs() < 8 || d.subsec_nanos() != 0 {
        return Err("must be whole seconds, at least 8s".into());
    }
    Ok(d)
}

/// A control plane's origin: an http(s) URL, of which only scheme, host and port count.
fn origin(s: &str) -> Result<url::Origin, String> {
    let url = Url::parse(s.trim()).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("{s:?} is not an http(s) URL with a host"));
    }
    Ok(url.origin())
}

/// A cluster id: what markers and `kubiya.ai/take-over-from` carry (a UID's characters).
fn cluster_id(s: &str) -> Result<String, String> {
    let id = s.trim();
    let plain = !id.is_empty() && id.len() <= 63 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !plain || id == crate::reconcile::ownership::UNKNOWN_CLUSTER {
        return Err("a cluster id is 1 to 63 letters, digits and '-' (and not \"unknown\")".into());
    }
    Ok(id.to_owned())
}

fn parse_key(s: &str) -> Result<ApiKey, std::convert::Infallible> {
    Ok(ApiKey::new(s))
}

#[derive(Parser, Debug)]
#[command(name = "kubiya-operator", version, about = "Makes Kubiya control-plane Environments declarative")]
// `kubiya-operator --flag run` would parse the flag into the top-level settings and then run with
// the subcommand's: an error instead of a silently dropped flag.
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: Config,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once at startup
pub enum Command {
    /// Run the operator (the default).
    Run(Config),
    /// Print an organisation's environments as Environment manifests (for kubectl apply and Git).
    Export(ExportArgs),
    /// Print the CustomResourceDefinitions the operator serves, as YAML.
    Crd {
        /// Only the one shipped as crds/<FILE> (environment.yaml, connection.yaml,
        /// clusterconnection.yaml, workerqueue.yaml).
        file: Option<String>,
    },
}

/// Settings of `kubiya-operator run`.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    /// The control plane, and the operator's own API key (optional: Environments without a
    /// connection of their own use it).
    #[command(flatten)]
    pub control_plane: ControlPlane,

    /// Whether Environments managed with the operator's own key may adopt environments made
    /// outside Kubernetes (`kubiya.ai/environment-id`). Turn it off on a cluster shared by
    /// tenants: whoever may create an Environment could otherwise take any environment of the
    /// organisation, and its worker token.
    #[arg(long, env = "KUBIYA_ALLOW_ADOPTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub allow_adoption: bool,

    /// The control planes (origins: scheme://host[:port], comma-separated) that Connections and
    /// ClusterConnections may send their keys to, besides --control-plane-url's, which is always
    /// allowed. A connection whose baseUrl is elsewhere is Stalled (UrlNotAllowed), and its Secret
    /// is never read.
    #[arg(long, env = "KUBIYA_ALLOWED_CONTROL_PLANES", value_delimiter = ',', value_parser = origin)]
    pub allowed_control_planes: Vec<url::Origin>,

    /// This cluster's id in the owner markers of remote environments (default: the UID of the
    /// kube-system namespace). Give a cluster restored from another's etcd snapshot an id of its
    /// own, so that it does not take itself for the original.
    #[arg(long, env = "KUBIYA_CLUSTER_ID", value_parser = cluster_id)]
    pub cluster_id: Option<String>,

    /// Timeout of one control-plane request.
    #[arg(long, env = "KUBIYA_REQUEST_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// The longest one reconcile pass may take; past it, it is abandoned and retried (a
    /// transient error), so that nothing, on any connection, holds a pass forever.
    #[arg(long, env = "KUBIYA_RECONCILE_TIMEOUT", default_value = "2m", value_parser = humantime::parse_duration)]
    pub reconcile_timeout: Duration,

    /// Control-plane requests in flight at once, per connection (the operator's own key, and
    /// connections that set no limit).
    #[arg(long, env = "KUBIYA_MAX_CONCURRENT_REQUESTS", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_requests: u16,

    /// Address of the HTTP server for /metrics, /healthz and /readyz (port 0: any free port).
    #[arg(long, env = "KUBIYA_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: std::net::SocketAddr,

    /// Watch only these namespaces, comma-separated (default: all namespaces).
    #[arg(long, env = "KUBIYA_WATCH_NAMESPACES", value_delimiter = ',', value_parser = non_empty)]
    pub watch_namespaces: Vec<String>,

    /// Reconcile only Environments whose labels match this selector (e.g. `shard=a`), to split
    /// them between several operator deployments.
    #[arg(long, env = "KUBIYA_LABEL_SELECTOR")]
    pub label_selector: Option<String>,

    /// Name of the coordination.k8s.io Lease that elects the one replica that reconciles.
    #[arg(long, env = "KUBIYA_LEASE_NAME", default_value = "kubiya-operator")]
    pub lease_name: String,

    /// Namespace of the Lease (default: the operator's own namespace in a cluster, else the
    /// kubeconfig context's).
    #[arg(long, env = "KUBIYA_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// How long a leader's Lease holds without renewal: the longest a standby waits to take over
    /// from a replica that died.
    #[arg(long, env = "KUBIYA_LEASE_DURATION", default_value = "15s", value_parser = lease_duration)]
    pub lease_duration: Duration,

    /// How often to look again while the control plane provisions an environment.
    #[arg(long, env = "KUBIYA_PROVISIONING_POLL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub provisioning_poll: Duration,

    /// How often a settled environment is compared with its spec and drift corrected (jittered
    /// down to 75 %, never beyond one interval); 0s turns the periodic check off.
    #[arg(long, env = "KUBIYA_RESYNC_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub resync_interval: Duration,

    /// The image of a WorkerQueue's workers when `spec.workers.image` names none.
    #[arg(long, env = "KUBIYA_WORKER_IMAGE", default_value = DEFAULT_WORKER_IMAGE)]
    pub worker_image: String,

    /// Reconciles run at once, per watched namespace (each has its own watch and queue).
    #[arg(long, env = "KUBIYA_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// This replica's name in the leader election (the pod name, from the downward API);
    /// default: host name and process id.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// Log format.
    #[arg(long, env = "KUBIYA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

/// Settings of `kubiya-operator export`.
#[derive(clap::Args, Debug, Clone)]
pub struct ExportArgs {
    /// The control plane and its API key (unless a connection of the cluster is named).
    #[command(flatten)]
    pub control_plane: ControlPlane,

    /// Use the control plane and key of this Connection of the cluster (NAMESPACE/NAME), through
    /// the kubeconfig.
    #[arg(long, value_name = "NAMESPACE/NAME", conflicts_with = "cluster_connection")]
    pub connection: Option<String>,

    /// Use the control plane and key of this ClusterConnection of the cluster.
    #[arg(long, value_name = "NAME")]
    pub cluster_connection: Option<String>,

    /// Namespace of the manifests (default: none, kubectl's current namespace).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,

    /// Manage nothing yet: managementPolicy Observe on every manifest.
    #[arg(long)]
    pub observe: bool,

    /// Deletion policy of the manifests.
    #[arg(long, value_enum, default_value_t = ExportDeletionPolicy::Orphan)]
    pub deletion_policy: ExportDeletionPolicy,

    /// Also environments already managed from a cluster (an owner marker that was not released).
    #[arg(long)]
    pub include_managed: bool,

    /// Also the organisation's `default` environment.
    #[arg(long)]
    pub include_default: bool,

    /// Output format: multi-document YAML, or a JSON List.
    #[arg(long, short = 'o', value_enum, default_value_t = ExportFormat::Yaml)]
    pub output: ExportFormat,

    /// Write the values of env vars whose names look secret (PASSWORD, PASSWD, TOKEN, SECRET,
    /// KEY, CREDENTIAL) to Secret manifests in this file (mode 0600, never the Git output), and
    /// reference them with `env[].valueFrom`. Without it, an export that finds such env vars
    /// fails and prints nothing.
    #[arg(long, value_name = "FILE")]
    pub secrets_out: Option<std::path::PathBuf>,

    /// Move every env var's value to the Secret manifests, not only those that look secret.
    #[arg(long, requires = "secrets_out")]
    pub env_to_secrets: bool,

    /// Timeout of one control-plane request.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportDeletionPolicy {
    #[value(name = "Orphan")]
    Orphan,
    #[value(name = "Delete")]
    Delete,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Yaml,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the API key file {path:?} is empty")]
    EmptyApiKeyFile { path: PathBuf },
    #[error("cannot read the API key file {path:?}")]
    ReadApiKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the control plane is, and the key to it.
#[derive(clap::Args, Debug, Clone)]
pub struct ControlPlane {
    /// Base URL of the Kubiya control plane.
    #[arg(
        long = "control-plane-url",
        env = "KUBIYA_CONTROL_PLANE_BASE_URL",
        default_value = "https://control-plane.kubiya.ai"
    )]
    pub url: Url,

    /// Kubiya API key. Prefer a file or an env var from a Secret over the command line.
    #[arg(long, env = "KUBIYA_API_KEY", hide_env_values = true, hide = true, value_parser = parse_key)]
    pub api_key: Option<ApiKey>,

    /// File holding the Kubiya API key (e.g. a mounted Secret); used when KUBIYA_API_KEY is unset.
    #[arg(long, env = "KUBIYA_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
}

impl ControlPlane {
    /// The API key: the env var (or flag), else the file, else none.
    pub fn api_key(&self) -> Result<Option<ApiKey>, ConfigError> {
        match (&self.api_key, &self.api_key_file) {
            (Some(k), _) if !k.is_empty() => Ok(Some(k.clone())),
            (_, Some(path)) => {
                let key = std::fs::read_to_string(path)
                    .map(ApiKey::new)
                    .map_err(|source| ConfigError::ReadApiKey { path: path.clone(), source })?;
                // A file that is there but empty is a mistake, not "no key".
                if key.is_empty() {
                    Err(ConfigError::EmptyApiKeyFile { path: path.clone() })
                } else {
                    Ok(Some(key))
                }
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_go_after_the_subcommand_or_without_one_never_before_it() {
        let cli = Cli::try_parse_from(["kubiya-operator", "run", "--concurrency", "3"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Run(c)) if c.concurrency == 3));
        let cli = Cli::try_parse_from(["kubiya-operator", "--concurrency", "3"]).unwrap();
        assert!(cli.command.is_none() && cli.run.concurrency == 3);
        assert!(Cli::try_parse_from(["kubiya-operator", "--concurrency", "3", "run"]).is_err());
    }

    #[test]
    fn allowed_control_planes_are_origins_and_cluster_ids_are_plain() {
        let cli = Cli::try_parse_from([
            "kubiya-operator",
            "--allowed-control-planes",
            "https://cp.example/path, http://127.0.0.1:8080",
            "--cluster-id",
            "prod-eu-1",
        ])
        .unwrap();
        let origins: Vec<String> =
            cli.run.allowed_control_planes.iter().map(|o| o.ascii_serialization()).collect();
        assert_eq!(origins, ["https://cp.example", "http://127.0.0.1:8080"]);
        assert_eq!(cli.run.cluster_id.as_deref(), Some("prod-eu-1"));
        for bad in ["ftp://cp.example", "not a url", "file:///etc/passwd"] {
            assert!(
                Cli::try_parse_from(["kubiya-operator", "--allowed-control-planes", bad]).is_err(),
                "{bad}"
            );
        }
        for bad in ["", "a b", "unknown", "x/y"] {
            assert!(Cli::try_parse_from(["kubiya-operator", "--cluster-id", bad]).is_err(), "{bad:?}");
        }
        let none = Cli::try_parse_from(["kubiya-operator"]).unwrap();
        assert!(none.run.allowed_control_planes.is_empty() && none.run.cluster_id.is_none());
    }

    #[test]
    fn api_key_is_not_printed_by_debug_or_help() {
        let cli = Cli::parse_from(["kubiya-operator", "run", "--api-key", "sekret"]);
        let Some(Command::Run(cfg)) = cli.command else { panic!("run") };
        assert!(!format!("{cfg:?}").contains("sekret"));
        let help = Cli::command().render_long_help().to_string();
        assert!(!help.contains("api-key <"), "the key flag is hidden from --help");
    }
}
