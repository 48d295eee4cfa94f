data "google_project" "this" {
  project_id = var.project_id
}

# Artifact Registry publishes its notifications only to a topic named exactly "gcr" in the
# registry's own project. The topic belongs to the project (other consumers may use it), so it
# is read, never created or owned here.
data "google_pubsub_topic" "gcr" {
  project = var.project_id
  name    = "gcr"
}

locals {
  labels = merge({ app = "image-relay" }, var.labels)

  # Pub/Sub's Google-managed service agent: it mints the push OIDC tokens and does the
  # dead-letter forwarding, so it needs the narrow grants below.
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  relay_member   = "serviceAccount:${google_service_account.relay.email}"
  invoker_member = "serviceAccount:${google_service_account.invoker.email}"

  rules_dir  = "/etc/image-relay"
  rules_path = "${local.rules_dir}/rules.toml"

  push = var.delivery == "push"

  apis = toset(concat(
    [
      "run.googleapis.com",
      "pubsub.googleapis.com",
      "secretmanager.googleapis.com",
      "artifactregistry.googleapis.com",
      # The relay calls generateAccessToken on the partner's service account when a target
      # sets `impersonate`; the API is enabled in the caller's project.
      "iamcredentials.googleapis.com",
      "logging.googleapis.com",
      "monitoring.googleapis.com",
    ],
    var.delivery == "eventarc" ? ["eventarc.googleapis.com"] : [],
    var.reconcile_schedule != null ? ["cloudscheduler.googleapis.com"] : [],
    # Where the audit sink writes (see audit.tf).
    local.audit_bigquery ? ["bigquery.googleapis.com"] : ["storage.googleapis.com"],
    # Rules with `vulnerabilities = {...}` read Artifact Analysis occurrences of source images.
    var.vulnerability_gate ? ["containeranalysis.googleapis.com"] : [],
    # Rules with `require_attestation` read attestors; `attest` signs in Cloud KMS and files
    # occurrences (the APIs are called from the relay's project).
    length(var.attestors) > 0 || var.release_attestation != null ? ["binaryauthorization.googleapis.com", "containeranalysis.googleapis.com"] : [],
    var.release_attestation != null ? ["cloudkms.googleapis.com"] : [],
  ))
}

resource "google_project_service" "apis" {
  for_each = var.enable_apis ? local.apis : toset([])

  project = var.project_id
  service = each.value
  # Other workloads in the project may depend on these APIs: destroying the relay must not
  # switch them off.
  disable_on_destroy         = false
  disable_dependent_services = false
}

# The relay's own identity: reads source repositories, writes targets (or impersonates the
# targets' accounts), reads its rules. Nothing else, and no keys are ever created for it.
resource "google_service_account" "relay" {
  project      = var.project_id
  account_id   = var.name
  display_name = "image-relay: copies images to target registries"
  description  = "Runs the ${var.name} Cloud Run service. Managed by Terraform (modules/image-relay)."

  depends_on = [google_project_service.apis]
}

# A separate identity for whoever calls the service (Pub/Sub push, Eventarc, Cloud Scheduler):
# it can invoke the relay and do nothing else, and the relay can refuse any other caller by
# its email (RELAY_PUSH_EMAILS). Using the relay's own account here would let anything that can
# act as the relay also push fake notifications.
resource "google_service_account" "invoker" {
  project      = var.project_id
  account_id   = "${var.name}-invoker"
  display_name = "image-relay: invokes the relay"
  description  = "Identity of Pub/Sub push / Eventarc / Cloud Scheduler calls to ${var.name}. Managed by Terraform (modules/image-relay)."

  depends_on = [google_project_service.apis]
}
