//! The README's first command: `scripts/demo.sh` relays a real image between two registries
//! it starts, and leaves nothing running when it is done.

use std::process::Command;

/// Processes whose command line names `needle` (this user's, from /proc).
fn processes_naming(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

#[test]
fn the_demo_relays_an_image_and_leaves_no_process_behind() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/scripts/demo.sh"))
        .env("IMAGE_RELAY_BIN", env!("CARGO_BIN_EXE_image-relay"))
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("HTTP 200"), "{stdout}");
    // The registries and the relay it started live under its work directory's name; the trap
    // has waited for them, so any still listed outlived the script.
    let left = processes_naming("/tmp/image-relay-demo.");
    assert!(
        left.is_empty(),
        "the demo left processes running: {left:#?}"
    );
}
