# Every grant here is a single additive member (google_*_iam_member): a binding or policy
# resource would take over the whole role or policy of resources that other teams, and in
# partner organizations other companies, also manage.

locals {
  source_repositories = {
    for r in var.source_repositories :
    "${coalesce(r.location, var.region)}/${r.repository}" => {
      location   = coalesce(r.location, var.region)
      repository = r.repository
    }
  }

  targets = {
    for t in var.target_repositories :
    "${t.project}/${t.location}/${t.repository}" => t
  }

  # Targets the relay writes to with its own identity.
  direct_targets = {
    for k, t in local.targets : k => t if t.impersonate == null && t.grant_iam
  }

  # Targets written through the owner's service account: one token-creator grant per account,
  # however many repositories it covers.
  impersonated_accounts = {
    for email, ts in {
      for t in values(local.targets) : t.impersonate => t... if t.impersonate != null && t.grant_iam
    } : email => ts[0]
  }
}

resource "google_artifact_registry_repository_iam_member" "source_reader" {
  for_each = local.source_repositories

  project    = var.project_id
  location   = each.value.location
  repository = each.value.repository
  # Read only: the relay never writes to its sources (a tag guard re-reads the source tag).
  role   = "roles/artifactregistry.reader"
  member = local.relay_member
}

resource "google_artifact_registry_repository_iam_member" "target_writer" {
  for_each = local.direct_targets

  project    = each.value.project
  location   = each.value.location
  repository = each.value.repository
  # writer pushes blobs, manifests and tags. It cannot delete tags: rules with
  # on_delete = "propagate" need a role with artifactregistry.tags.delete, granted by the
  # repository owner on purpose, not by default.
  role   = "roles/artifactregistry.writer"
  member = local.relay_member
}

resource "google_service_account_iam_member" "target_impersonation" {
  for_each = local.impersonated_accounts

  # The account lives in the partner's project, which its email names; the repository's
  # project is only a fallback for the rare account whose email does not.
  service_account_id = "projects/${try(regex("@([a-z][a-z0-9-]+)\\.iam\\.gserviceaccount\\.com$", each.key)[0], each.value.project)}/serviceAccounts/${each.key}"
  # Lets the relay mint short-lived tokens of the partner's account; the partner keeps control
  # of what that account may write and can revoke this grant at any time.
  role   = "roles/iam.serviceAccountTokenCreator"
  member = local.relay_member
}

resource "google_cloud_run_v2_service_iam_member" "invoker" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.relay.name
  role     = "roles/run.invoker"
  member   = local.invoker_member
}

# Pub/Sub mints the OIDC token of the invoker account for every push (and for Eventarc's
# subscription). Projects whose Pub/Sub agent predates April 2021 lack this right; granting it
# on this one account, rather than project-wide, keeps the agent from minting tokens for others.
resource "google_service_account_iam_member" "pubsub_mints_invoker_tokens" {
  service_account_id = google_service_account.invoker.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}

# With CMEK, the service agents encrypt and decrypt on the relay's behalf; the grant is on the
# one key, not on its key ring or project.
resource "google_kms_crypto_key_iam_member" "agents" {
  for_each = var.kms_key_name == null ? {} : merge(
    {
      pubsub        = local.pubsub_agent
      secretmanager = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-secretmanager.iam.gserviceaccount.com"
    },
    # The audit dataset or bucket (audit.tf): BigQuery and Cloud Storage encrypt with their own
    # per-project agents, which the data sources look up (and create if they do not exist yet).
    local.audit_bigquery
    ? { bigquery = "serviceAccount:${data.google_bigquery_default_service_account.audit[0].email}" }
    : { storage = "serviceAccount:${data.google_storage_project_service_account.audit[0].email_address}" },
  )

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = each.value
}

# Rules with `vulnerabilities = {...}` hold an image until Artifact Analysis has scanned it and
# its findings are within the rule's limits; the relay reads the image's vulnerability
# occurrences, which live in the project of the source repositories. There is no narrower
# resource than the project for occurrences, so this is the one project-level grant, and it
# exists only when var.vulnerability_gate is set.
resource "google_project_iam_member" "relay_reads_vulnerabilities" {
  count = var.vulnerability_gate ? 1 : 0

  project = var.project_id
  role    = "roles/containeranalysis.occurrences.viewer"
  member  = local.relay_member
}

# The Prometheus sidecar writes the relay's metrics as the relay's identity. metricWriter is
# granted on the project only: Cloud Monitoring has no narrower resource to grant it on, and it
# allows writing time series, not reading or changing anything.
resource "google_project_iam_member" "relay_writes_metrics" {
  count = var.managed_prometheus ? 1 : 0

  project = var.project_id
  role    = "roles/monitoring.metricWriter"
  member  = local.relay_member
}
