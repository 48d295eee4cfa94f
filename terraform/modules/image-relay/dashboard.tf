# One Cloud Monitoring dashboard per relay: Cloud Run (requests by response code, latency,
# instances), Pub/Sub (unacked, oldest unacked age, dead letters, push responses), the
# copy-failure log metric, and the relay's own Prometheus metrics through Managed Service for
# Prometheus (PromQL tiles; empty with managed_prometheus = false).
#
# The layout is a JSON template of its own (monitoring/dashboard.json.tftpl) rather than HCL:
# tests/dashboards.rs renders it with sample values and checks every metric type, label,
# aligner and PromQL series it names against Google's metric list, this module's log-based
# metrics and a live scrape of the relay. Only the names below are interpolated; Cloud
# Monitoring's own `${metric.labels.x}` legends are escaped there as `$${...}`.

locals {
  # The subscription that delivers notifications to the relay: the module's own in push mode,
  # Eventarc's (a full path in the trigger's transport) otherwise. Pub/Sub metrics name it by
  # its short id.
  delivery_subscription = (
    local.push
    ? google_pubsub_subscription.push[0].name
    : basename(google_eventarc_trigger.relay[0].transport[0].pubsub[0].subscription)
  )
}

resource "google_monitoring_dashboard" "relay" {
  project = var.project_id
  dashboard_json = templatefile("${path.module}/monitoring/dashboard.json.tftpl", {
    service_name             = google_cloud_run_v2_service.relay.name
    delivery_subscription    = local.delivery_subscription
    dead_letter_subscription = google_pubsub_subscription.dead_letter.name
    copy_failures_metric     = google_logging_metric.copy_failures.name
    slo_percent              = var.replication_slo.percent
    slo_within_seconds       = var.replication_slo.within_seconds
    slo_bound                = local.slo_bound
    slo_ratio                = local.slo_ratio
  })

  depends_on = [google_project_service.apis]
}
