//! A private test API server (etcd + apiserver) for the tests that stop, restart or replace it
//! (or need a second cluster), so that doing so does not disturb the other tests.

use std::path::PathBuf;
use std::process::Command;

/// `tests/cluster/apiserver.sh` on its own ports and run directory; stopped when dropped.
pub struct PrivateCluster {
    run: PathBuf,
    ports: [&'static str; 3],
}

impl PrivateCluster {
    /// Starts one in `target/tmp/<dir>` on these API, etcd client and etcd peer ports.
    pub fn start_at(dir: &str, ports: [&'static str; 3]) -> PrivateCluster {
        let run = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(dir);
        let cluster = PrivateCluster { run, ports };
        cluster.script("stop"); // a killed earlier run may have left one behind
        cluster.script("start");
        cluster
    }

    /// The kubeconfig of this API server.
    pub fn kubeconfig(&self) -> PathBuf {
        self.run.join("kubeconfig")
    }

    /// Runs `apiserver.sh <command>`; fails the test if it fails.
    pub fn script(&self, command: &str) {
        self.script_with(command, &[]);
    }

    /// Same, with extra environment (`TA_KEEP_DATA=1`).
    pub fn script_with(&self, command: &str, env: &[(&str, &str)]) {
        let status = self.command(command, env).status().expect("run apiserver.sh");
        assert!(status.success(), "apiserver.sh {command} failed");
    }

    /// Same, without blocking: for a test that watches something else while the script runs.
    pub async fn script_async(&self, command: &str, env: &[(&str, &str)]) {
        let status = tokio::process::Command::from(self.command(command, env))
            .status()
            .await
            .expect("run apiserver.sh");
        assert!(status.success(), "apiserver.sh {command} failed");
    }

    fn command(&self, command: &str, env: &[(&str, &str)]) -> Command {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster/apiserver.sh");
        let mut cmd = Command::new("bash");
        cmd.args([script, command])
            .envs(env.iter().copied())
            .env("TA_RUN", &self.run)
            .env("TA_API_PORT", self.ports[0])
            .env("TA_ETCD_PORT", self.ports[1])
            .env("TA_ETCD_PEER_PORT", self.ports[2]);
        cmd
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.script("stop");
    }
}
