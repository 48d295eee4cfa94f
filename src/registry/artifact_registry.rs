//! Artifact Registry's own image listing, for reconcile when the registry catalog is not
//! offered: `GET {api}/v1/projects/P/locations/L/repositories/R/dockerImages`, paginated.

use std::collections::BTreeSet;

use super::body::{MAX_LISTING_BYTES, read_capped};
use super::error::{Op, RegistryError};

/// `us-central1-docker.pkg.dev` → `us-central1`.
pub fn location(host: &str) -> Option<&str> {
    host.strip_suffix("-docker.pkg.dev")
        .filter(|l| !l.is_empty())
}

/// `PROJECT/REPO[/more]` → (`PROJECT`, `REPO`); a domain-scoped project
/// (`example.com/PROJECT/REPO`) becomes `example.com:PROJECT`.
pub fn project_and_repository(prefix: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = prefix.split('/').collect();
    match parts.as_slice() {
        [domain, project, repo, ..] if domain.contains('.') => {
            Some((format!("{domain}:{project}"), (*repo).to_owned()))
        }
        [project, repo, ..] => Some(((*project).to_owned(), (*repo).to_owned())),
        _ => None,
    }
}

/// Image repositories (`PROJECT/REPO/IMAGE` paths) under `prefix` on an Artifact Registry host.
pub async fn list_repositories(
    http: &reqwest::Client,
    api: &str,
    host: &str,
    prefix: &str,
    token: &str,
) -> Result<Vec<String>, RegistryError> {
    let op = Op {
        method: "GET",
        registry: host.into(),
        repository: prefix.into(),
        object: "Artifact Registry image listing".into(),
    };
    let protocol = |detail: String| RegistryError::Protocol {
        op: op.clone(),
        detail,
    };
    let location =
        location(host).ok_or_else(|| protocol("not an Artifact Registry host".into()))?;
    let (project, repo) = project_and_repository(prefix)
        .ok_or_else(|| protocol("the source prefix names no PROJECT/REPOSITORY".into()))?;
    let url = format!(
        "{}/v1/projects/{project}/locations/{location}/repositories/{repo}/dockerImages",
        api.trim_end_matches('/')
    );
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Page {
        #[serde(default)]
        docker_images: Vec<Image>,
        #[serde(default)]
        next_page_token: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Image {
        uri: String,
    }
    let want = format!("{host}/{prefix}/");
    let mut repos = BTreeSet::new();
    let mut page_token: Option<String> = None;
    loop {
        let mut req = http
            .get(&url)
            .bearer_auth(token)
            .query(&[("pageSize", "1000")]);
        if let Some(t) = &page_token {
            req = req.query(&[("pageToken", t.as_str())]);
        }
        let resp = req.send().await.map_err(|e| super::transport(&op, &e))?;
        let status = resp.status().as_u16();
        // Google API errors carry no distribution error codes: the status is all there is to keep.
        if !(200..300).contains(&status) {
            return Err(RegistryError::Status {
                op: op.clone(),
                status,
                codes: Box::new([]),
                retry_after: None,
            });
        }
        let body = read_capped(resp, MAX_LISTING_BYTES)
            .await
            .map_err(|e| e.for_op(&op))?;
        let page: Page = serde_json::from_slice(&body)
            .map_err(|e| protocol(format!("unexpected answer: {e}")))?;
        for img in page.docker_images {
            // `LOCATION-docker.pkg.dev/PROJECT/REPO/IMAGE@sha256:...`
            let path = img.uri.split('@').next().unwrap_or(&img.uri);
            if let Some(rest) = path.strip_prefix(&want) {
                repos.insert(format!("{prefix}/{rest}"));
            }
        }
        match page.next_page_token.filter(|t| !t.is_empty()) {
            Some(t) => page_token = Some(t),
            None => break,
        }
    }
    Ok(repos.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_prefixes_map_to_api_resources() {
        assert_eq!(location("us-central1-docker.pkg.dev"), Some("us-central1"));
        assert_eq!(location("europe-docker.pkg.dev"), Some("europe"));
        assert_eq!(location("gcr.io"), None);
        assert_eq!(
            project_and_repository("acme/releases"),
            Some(("acme".into(), "releases".into()))
        );
        assert_eq!(
            project_and_repository("example.com/my-project/repo/team"),
            Some(("example.com:my-project".into(), "repo".into()))
        );
        assert_eq!(project_and_repository("acme"), None);
    }

    #[tokio::test]
    async fn the_listing_follows_pages_and_keeps_images_under_the_prefix() {
        use axum::extract::Query;
        use std::collections::HashMap;
        async fn images(
            headers: axum::http::HeaderMap,
            Query(q): Query<HashMap<String, String>>,
        ) -> axum::response::Response {
            use axum::response::IntoResponse;
            if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer tok") {
                return axum::http::StatusCode::UNAUTHORIZED.into_response();
            }
            let h = "us-docker.pkg.dev/acme/releases";
            let body = match q.get("pageToken").map(String::as_str) {
                None => serde_json::json!({
                    "dockerImages": [{ "uri": format!("{h}/app@sha256:1") }, { "uri": format!("{h}/app@sha256:2") }],
                    "nextPageToken": "p2"
                }),
                Some("p2") => {
                    serde_json::json!({ "dockerImages": [{ "uri": format!("{h}/tools/lint@sha256:3") }] })
                }
                Some(_) => serde_json::json!({}),
            };
            axum::Json(body).into_response()
        }
        let app = axum::Router::new().route(
            "/v1/projects/acme/locations/us/repositories/releases/dockerImages",
            axum::routing::get(images),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        let api = format!("http://{addr}");
        let got = list_repositories(
            &reqwest::Client::new(),
            &api,
            "us-docker.pkg.dev",
            "acme/releases",
            "tok",
        )
        .await
        .unwrap();
        assert_eq!(got, ["acme/releases/app", "acme/releases/tools/lint"]);
        let e = list_repositories(
            &reqwest::Client::new(),
            &api,
            "us-docker.pkg.dev",
            "acme/releases",
            "wrong",
        )
        .await
        .unwrap_err();
        assert_eq!(e.status(), Some(401));
    }
}
