//! Credentials: the registry token flow, Docker config credential helpers.

mod common;

use std::time::Duration;

use common::*;

const RELAY: &str = env!("CARGO_BIN_EXE_image-relay");

async fn run(cmd: &mut tokio::process::Command) -> std::process::Output {
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.kill_on_drop(true).output())
        .await
        .expect("image-relay finished")
        .expect("run image-relay");
    assert!(
        out.status.success(),
        "image-relay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test]
async fn the_token_flow_gets_one_token_per_scope_and_a_mount_token_covers_both_repositories() {
    with_timeout(60, async {
        let reg = Registry::start().await;
        let dst = Registry::start().await;
        let token_reg = Proxy::start_token_auth(&reg.host(), "relay", "s3cret").await;
        let index = Seeder::for_registry(&reg)
            .push_multiarch("build/app", Some("v1"), Format::Oci, 51)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("relay.toml");
        std::fs::write(
            &config,
            format!(
                "[registry.\"{}\"]\nauth = \"basic\"\nusername = \"relay\"\npassword_env = \"PW\"\n",
                token_reg.host()
            ),
        )
        .unwrap();
        let copy = |src: String, dst: String| {
            let mut c = tokio::process::Command::new(RELAY);
            c.args(["copy", "--config", config.to_str().unwrap(), &src, &dst])
                .env("PW", "s3cret")
                .env("DOCKER_CONFIG", "/nonexistent");
            c
        };
        // Token registry as source, plain registry as target: one pull token for all reads.
        run(&mut copy(
            format!("{}/build/app:v1", token_reg.host()),
            format!("{}/app:v1", dst.host()),
        ))
        .await;
        assert_eq!(
            token_reg.token_requests(),
            [vec!["repository:build/app:pull".to_owned()]]
        );
        let got = Seeder::for_registry(&dst)
            .get_manifest_raw("app", "v1")
            .await
            .unwrap();
        assert_eq!(got.bytes, index.manifest.bytes);

        // Same registry on both sides: blobs are mounted, with a token that can push the
        // target and pull the source.
        run(&mut copy(
            format!("{}/build/app:v1", token_reg.host()),
            format!("{}/release/app:v1", token_reg.host()),
        ))
        .await;
        let scopes = token_reg.token_requests();
        assert!(
            scopes.contains(&vec![
                "repository:release/app:pull,push".to_owned(),
                "repository:build/app:pull".to_owned()
            ]),
            "{scopes:#?}"
        );
        let mounted = token_reg
            .requests()
            .iter()
            .filter(|r| r.path.contains("mount=") && r.status == 201)
            .count();
        assert!(mounted >= 4, "blobs were not mounted");
        let got = Seeder::for_registry(&reg)
            .get_manifest_raw("release/app", "v1")
            .await
            .unwrap();
        assert_eq!(got.bytes, index.manifest.bytes);
    })
    .await;
}

/// A Docker config directory, and a directory of fake `docker-credential-NAME` helpers put
/// first on `PATH`, for `image-relay copy` runs.
struct DockerHome {
    dir: tempfile::TempDir,
}

impl DockerHome {
    fn new(config_json: &str) -> DockerHome {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::fs::create_dir(dir.path().join("docker")).unwrap();
        std::fs::write(dir.path().join("docker/config.json"), config_json).unwrap();
        DockerHome { dir }
    }

    /// `docker-credential-NAME get` answering `username`/`secret`, only for `host` (read on
    /// stdin, as real helpers do); "credentials not found" for any other host.
    fn helper(&self, name: &str, host: &str, username: &str, secret: &str) {
        let helper = self
            .dir
            .path()
            .join("bin")
            .join(format!("docker-credential-{name}"));
        std::fs::write(
            &helper,
            format!(
                "#!/bin/sh\nread host\n[ \"$1\" = get ] && [ \"$host\" = \"{host}\" ] || {{ echo 'credentials not found'; exit 1; }}\n\
                 echo '{{\"ServerURL\":\"'$host'\",\"Username\":\"{username}\",\"Secret\":\"{secret}\"}}'\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }

    /// `image-relay copy SRC DST` with this Docker config and these helpers.
    fn copy(&self, src: &str, dst: &str) -> tokio::process::Command {
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut c = tokio::process::Command::new(RELAY);
        c.args(["copy", src, dst])
            .env("PATH", path)
            .env("DOCKER_CONFIG", self.dir.path().join("docker"));
        c
    }
}

#[tokio::test]
async fn docker_config_credential_helpers_are_run() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let dst = Registry::start_with_auth("helper-user", "helper-pass").await;
        let img = Seeder::for_registry(&src)
            .push_random_image("app", Some("v1"), Format::Oci, 53)
            .await;
        let home = DockerHome::new(&format!(
            "{{\"credHelpers\":{{\"{}\":\"fake\"}}}}",
            dst.host()
        ));
        home.helper("fake", &dst.host(), "helper-user", "helper-pass");
        run(&mut home.copy(
            &format!("{}/app:v1", src.host()),
            &format!("{}/app:v1", dst.host()),
        ))
        .await;
        let got = Seeder::for_registry(&dst)
            .get_manifest_raw("app", "v1")
            .await
            .unwrap();
        assert_eq!(got.bytes, img.manifest.bytes);
    })
    .await;
}

/// Identity tokens (what `docker login` stores for registries with OAuth2 token services, and
/// what credential helpers return under the user `<token>`) are exchanged at the token service
/// with the `refresh_token` grant, one access token per scope, on both sides of a copy.
#[tokio::test]
async fn docker_config_identity_tokens_are_exchanged_with_the_refresh_token_grant() {
    with_timeout(60, async {
        let src_reg = Registry::start().await;
        let dst_reg = Registry::start().await;
        let src = Proxy::start_token_auth_refresh(&src_reg.host(), "idt-source").await;
        let dst = Proxy::start_token_auth_refresh(&dst_reg.host(), "idt-target").await;
        let img = Seeder::for_registry(&src_reg)
            .push_random_image("app", Some("v1"), Format::Oci, 54)
            .await;
        // The shape `docker login` writes: a placeholder user in `auth`, the token beside it.
        let placeholder = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "00000000-0000-0000-0000-000000000000:",
        );
        let home = DockerHome::new(&format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"{placeholder}\",\"identitytoken\":\"idt-target\"}}}},\
             \"credHelpers\":{{\"{}\":\"idt\"}}}}",
            dst.host(),
            src.host()
        ));
        home.helper("idt", &src.host(), "<token>", "idt-source");
        run(&mut home.copy(
            &format!("{}/app:v1", src.host()),
            &format!("{}/mirror/app:v1", dst.host()),
        ))
        .await;
        let got = Seeder::for_registry(&dst_reg)
            .get_manifest_raw("mirror/app", "v1")
            .await
            .unwrap();
        assert_eq!(got.bytes, img.manifest.bytes);
        assert_eq!(
            src.token_requests(),
            [vec!["repository:app:pull".to_owned()]]
        );
        // The no-op check reads the target before anything is pushed.
        assert_eq!(
            dst.token_requests(),
            [
                vec!["repository:mirror/app:pull".to_owned()],
                vec!["repository:mirror/app:pull,push".to_owned()]
            ]
        );
    })
    .await;
}
