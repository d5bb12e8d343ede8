//! The dashboard and tickwire.js, driven from here so `cargo test -- --ignored`
//! runs them: the Node unit tests (`node --test`) and the headless-Chromium
//! test of the dashboard against this very binary. `.ci/run` installs Node's
//! packages (web/node_modules) and Debian's Chromium first.

use std::path::PathBuf;
use std::process::Command;

fn web_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../web")
}

#[test]
#[ignore = "needs node"]
fn tickwire_js_unit_tests_pass_under_node() {
    let status = Command::new("node")
        .args(["--test", "--test-reporter=spec"])
        .args(
            std::fs::read_dir(web_dir().join("test"))
                .expect("web/test")
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.to_string_lossy().ends_with(".test.mjs")),
        )
        .current_dir(web_dir())
        .status()
        .expect("run node");
    assert!(status.success(), "node --test failed");
}

#[test]
#[ignore = "needs chromium and node with web/node_modules (playwright-core)"]
fn the_dashboard_works_in_headless_chromium() {
    let status = Command::new("node")
        .arg("browser/dashboard.browser.mjs")
        .current_dir(web_dir())
        .env("TICKWIRE_BIN", env!("CARGO_BIN_EXE_tickwire"))
        .status()
        .expect("run node");
    assert!(
        status.success(),
        "the browser test failed (its output is above)"
    );
}
