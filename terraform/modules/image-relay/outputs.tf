output "service_url" {
  description = "URL of the Cloud Run service (authentication required: callers need roles/run.invoker)."
  value       = google_cloud_run_v2_service.relay.uri
}

output "service_name" {
  description = "Name of the Cloud Run service."
  value       = google_cloud_run_v2_service.relay.name
}

output "relay_service_account_email" {
  description = "The relay's identity: the principal target owners grant writer (or token creator on their own account) to."
  value       = google_service_account.relay.email
}

output "invoker_service_account_email" {
  description = "Identity of Pub/Sub push, Eventarc and Cloud Scheduler calls; the only caller RELAY_PUSH_EMAILS admits."
  value       = google_service_account.invoker.email
}

output "delivery_id" {
  description = "Id of the push subscription (delivery = \"push\") or of the Eventarc trigger (delivery = \"eventarc\")."
  value       = local.push ? google_pubsub_subscription.push[0].id : google_eventarc_trigger.relay[0].id
}

output "dead_letter_subscription" {
  description = "Id of the subscription that keeps dead-lettered notifications."
  value       = google_pubsub_subscription.dead_letter.id
}

output "dead_letter_topic" {
  description = "Id of the dead-letter topic."
  value       = google_pubsub_topic.dead_letter.id
}

output "rules_secret" {
  description = "Id of the Secret Manager secret holding the rule file, and the version the service mounts."
  value = {
    secret  = google_secret_manager_secret.rules.id
    version = google_secret_manager_secret_version.rules.version
  }
}

output "partner_grants" {
  description = "For each target with grant_iam = false: the grant its owner must make for the relay to write there."
  value = [
    for t in values(local.targets) : (
      t.impersonate == null
      ? {
        target   = "${t.location}-docker.pkg.dev/${t.project}/${t.repository}"
        resource = "projects/${t.project}/locations/${t.location}/repositories/${t.repository}"
        role     = "roles/artifactregistry.writer"
        member   = local.relay_member
      }
      : {
        target   = "${t.location}-docker.pkg.dev/${t.project}/${t.repository}"
        resource = "serviceAccount ${t.impersonate} (which itself needs roles/artifactregistry.writer on the repository)"
        role     = "roles/iam.serviceAccountTokenCreator"
        member   = local.relay_member
      }
    ) if !t.grant_iam
  ]
}

output "eventarc_subscription_update_command" {
  description = "delivery = \"eventarc\" only: gives Eventarc's own subscription the ack deadline, retry and dead-letter policy the push subscription has (the trigger cannot set them). Run once after apply."
  value = local.push ? null : join(" ", [
    "gcloud pubsub subscriptions update",
    google_eventarc_trigger.relay[0].transport[0].pubsub[0].subscription,
    "--ack-deadline=600",
    "--min-retry-delay=${var.retry_minimum_backoff}",
    "--max-retry-delay=${var.retry_maximum_backoff}",
    "--dead-letter-topic=${google_pubsub_topic.dead_letter.id}",
    "--max-delivery-attempts=${var.max_delivery_attempts}",
  ])
}

output "audit_dataset_id" {
  description = "audit_destination = \"bigquery\": id of the audit dataset (projects/P/datasets/D); null otherwise."
  value       = local.audit_bigquery ? google_bigquery_dataset.audit[0].id : null
}

output "audit_table" {
  description = "audit_destination = \"bigquery\": the table the audit sink writes, PROJECT.DATASET.run_googleapis_com_stderr, for the README's query (BigQuery creates it with the first record); null otherwise."
  value       = local.audit_bigquery ? local.audit_table : null
}

output "audit_bucket" {
  description = "audit_destination = \"bucket\": name (= id) of the audit bucket; records arrive as hourly files under run.googleapis.com/stderr/; null otherwise."
  value       = local.audit_bigquery ? null : google_storage_bucket.audit[0].name
}

output "audit_sink_writer_identity" {
  description = "Identity the audit sink writes as; the module grants it write on the audit dataset or bucket only."
  value       = google_logging_project_sink.audit.writer_identity
}

output "dashboard_id" {
  description = "Id of the Cloud Monitoring dashboard \"image-relay: NAME\" (projects/PROJECT_NUMBER/dashboards/ID)."
  value       = google_monitoring_dashboard.relay.id
}

output "replication_slo" {
  description = "The replication objective as the alerts measure it: percent, within_seconds, and measured_within_seconds, the histogram bound the slow-copies alert counts against (the largest not above within_seconds)."
  value = {
    percent                 = var.replication_slo.percent
    within_seconds          = var.replication_slo.within_seconds
    measured_within_seconds = local.slo_bound
  }
}
