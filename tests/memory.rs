//! Memory stays bounded whatever the blob size: a 300 MB layer is streamed, never held.

mod common;

use common::*;

/// Peak resident set of a finished child, from the kernel's own accounting (`wait4`), so a
/// short spike between two samples cannot be missed.
fn wait_with_peak_rss(child: std::process::Child) -> (std::process::ExitStatus, u64) {
    use std::os::unix::process::ExitStatusExt;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: plain FFI call with valid pointers to locals; the pid is our own child, which
    // std has not reaped (we never call wait on it).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4 failed: {}", std::io::Error::last_os_error());
    std::mem::forget(child);
    // Linux reports ru_maxrss in KiB.
    (
        std::process::ExitStatus::from_raw(status),
        usage.ru_maxrss as u64 * 1024,
    )
}

#[tokio::test]
async fn a_300_mb_layer_copies_with_peak_rss_under_64_mib() {
    with_timeout(300, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let s = Seeder::for_registry(&src);
        let size = 300_000_000;
        let layer = s.push_blob_stream("big/app", size, 47).await;
        let config = s
            .push_blob("big/app", &config_json(&Platform::linux_amd64(), &[]))
            .await;
        let manifest = Pushed::new(
            media::OCI_MANIFEST,
            image_manifest_json(Format::Oci, &config, &[(media::OCI_LAYER_GZIP, &layer)]),
        );
        s.push_pushed("big/app", Some("v1"), &manifest).await;

        let child = std::process::Command::new(env!("CARGO_BIN_EXE_image-relay"))
            .args([
                "copy",
                "-q",
                &format!("{}/big/app:v1", src.host()),
                &format!("{}/big/app:v1", dst.host()),
            ])
            .env("DOCKER_CONFIG", "/nonexistent")
            .spawn()
            .expect("start image-relay");
        let (status, peak) = tokio::task::spawn_blocking(move || wait_with_peak_rss(child))
            .await
            .unwrap();
        assert!(status.success(), "copy failed: {status}");
        let d = Seeder::for_registry(&dst);
        assert_eq!(
            d.get_manifest_raw("big/app", "v1").await.unwrap().bytes,
            manifest.bytes
        );
        assert!(d.blob_exists("big/app", &layer.digest).await);
        assert!(
            peak < 64 << 20,
            "peak RSS {} MiB for a 300 MB layer",
            peak >> 20
        );
        eprintln!(
            "peak RSS copying 300 MB: {:.1} MiB",
            peak as f64 / (1 << 20) as f64
        );
    })
    .await;
}
