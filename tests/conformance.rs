//! Conformance: the emulator must answer like the real control-plane server.
//!
//! Every scenario runs against the emulator and its normalised transcript is compared with the
//! transcript recorded from the real server (`tests/conformance/real-server.json`). When
//! `KUBIYA_CONFORMANCE_REAL_URL` points at a running real server (`make conformance` starts one),
//! the scenarios also run there and the live answers are compared with both; with
//! `CONFORMANCE_BLESS=1` the live transcript is written to the recording instead.

#[path = "conformance/harness.rs"]
mod harness;
#[path = "conformance/scenarios.rs"]
mod scenarios;

use std::collections::BTreeMap;
use std::time::Duration;

use harness::{Answer, Target};
use kubiya_cp_emulator::{Config, Emulator, FirstOutcome};

const RECORDING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance/real-server.json");

/// The emulator set up like the real server in the test bed: no workflow engine reachable, so an
/// organization's first environment fails at once.
fn emulator_config() -> Config {
    Config {
        provisioning: Duration::ZERO,
        first_outcome: FirstOutcome::Error(scenarios::FIRST_ENVIRONMENT_ERROR.to_owned()),
        ..Config::default()
    }
}

async fn transcripts(target: &Target) -> BTreeMap<String, Vec<Answer>> {
    let mut out = BTreeMap::new();
    for s in scenarios::all() {
        out.insert(s.name.to_owned(), harness::run(target, &s).await);
    }
    out
}

fn compare(
    left_name: &str,
    left: &BTreeMap<String, Vec<Answer>>,
    right_name: &str,
    right: &BTreeMap<String, Vec<Answer>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, l) in left {
        match right.get(name) {
            Some(r) => problems.extend(harness::diff(name, left_name, l, right_name, r)),
            None => problems.push(format!(
                "{name}: not in the {right_name} transcript (re-record with CONFORMANCE_BLESS=1)"
            )),
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_answers_like_the_real_server() {
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
    );
    let emulator = Emulator::start(emulator_config()).await.expect("emulator");
    let emulated = transcripts(&Target { base_url: emulator.base_url(), run_id: run_id.clone() }).await;

    let recorded: Option<BTreeMap<String, Vec<Answer>>> = std::fs::read_to_string(RECORDING)
        .ok()
        .map(|t| serde_json::from_str(&t).expect("parse the recording"));
    let mut problems = Vec::new();

    if let Ok(url) = std::env::var("KUBIYA_CONFORMANCE_REAL_URL") {
        let real = transcripts(&Target { base_url: url.trim_end_matches('/').to_owned(), run_id }).await;
        if std::env::var("CONFORMANCE_BLESS").is_ok_and(|v| v == "1") {
            let text = serde_json::to_string_pretty(&real).expect("serialise") + "\n";
            std::fs::write(RECORDING, text).expect("write the recording");
        } else if let Some(recorded) = &recorded {
            problems.extend(compare("real server now", &real, "recording", recorded));
        }
        problems.extend(compare("emulator", &emulated, "real server", &real));
    } else {
        let recorded = recorded
            .expect("tests/conformance/real-server.json is missing: record it with `make conformance-bless`");
        problems.extend(compare("emulator", &emulated, "real server (recorded)", &recorded));
    }
    assert!(problems.is_empty(), "the emulator and the real server differ:\n  {}", problems.join("\n  "));
}
