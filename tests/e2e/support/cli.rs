//! The command lines a user runs, run as a user runs them: `kubiya-operator export` and
//! `kubectl apply`.

use std::process::Stdio;

use super::TestBed;

/// `kubiya-operator export` as a user runs it, with the bed's organisation's key and control
/// plane; its stdout. Fails the test if it fails, or if its progress shows the key.
pub async fn export(bed: &TestBed, args: &[&str]) -> String {
    let (ok, stdout, stderr) = try_export(bed, args).await;
    assert!(ok, "export failed: {stderr}");
    stdout
}

/// The same, however it ends: whether it succeeded, its stdout and its stderr. Fails the test if
/// its progress shows the key.
pub async fn try_export(bed: &TestBed, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubiya-operator"))
        .arg("export")
        .args(args)
        .env_clear()
        .env("KUBIYA_API_KEY", kubiya_cp_emulator::token(&bed.org))
        .env("KUBIYA_CONTROL_PLANE_BASE_URL", &bed.control_plane_url)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run export");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains(&kubiya_cp_emulator::token(&bed.org)), "the key in the progress");
    (out.status.success(), String::from_utf8(out.stdout).expect("UTF-8"), stderr)
}

/// `kubectl apply -f -` of `manifests` on the bed's API server; fails the test if kubectl refuses.
pub fn kubectl_apply(bed: &TestBed, manifests: &str) {
    use std::io::Write;
    let kubectl = std::env::var_os(super::KUBECTL_VAR).expect(super::KUBECTL_VAR);
    let mut child = std::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&bed.kubeconfig)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("kubectl");
    child.stdin.take().unwrap().write_all(manifests.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "kubectl apply refused the export:\n{manifests}");
}

/// `kubectl -n <the bed's namespace> <args>` on the bed's API server: whether it succeeded, and
/// what it printed (stdout, then stderr).
pub fn kubectl(bed: &TestBed, args: &[&str]) -> (bool, String) {
    let kubectl = std::env::var_os(super::KUBECTL_VAR).expect(super::KUBECTL_VAR);
    let out = std::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&bed.kubeconfig)
        .args(["-n", &bed.namespace])
        .args(args)
        .output()
        .expect("kubectl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}
