# The replication objective (var.replication_slo): P % of images in place at their targets within
# S seconds of Artifact Registry publishing them. Two alert policies watch it, because each
# sees a way of missing it that the other cannot:
#
# 1. Slow replications. The relay measures publish-to-replicated itself: the histogram
#    image_relay_replication_latency_seconds (publish time of the Pub/Sub message to the image in
#    place at a target, retries and queueing included). Nothing else has that number: the audit
#    record's and Cloud Run's durations start when the delivery arrives, and no log line carries
#    the publish time, so a logs-based distribution metric could only measure the copy, not the
#    wait before it. The histogram reaches Cloud Monitoring through the Managed Service for
#    Prometheus sidecar (service.tf), and the condition is PromQL over it: the share of
#    replications in the last hour that were within the bound, below P %.
# 2. Notifications still waiting. An image that has not arrived yet is in no histogram (it is
#    observed once in place), and a relay that is down observes nothing at all; its
#    notification is still unacked in the delivery subscription. Once the oldest unacked message
#    is older than S seconds, its image, if a rule wants it, is late already. This one needs no
#    sidecar.
#
# Images that fail for good (copy failures, dead letters) have their own alerts in
# monitoring.tf. What to do when these fire: terraform/README.md, "Replication objective".

locals {
  # The histogram's bucket bounds, as the relay defines them (src/telemetry.rs: 0.25 s doubling,
  # 16 buckets); tests/dashboards.rs checks this list against a live scrape.
  replication_buckets = jsondecode(file("${path.module}/monitoring/replication-latency-buckets.json"))

  # A histogram cannot tell apart two latencies within one bucket, so "within S seconds" is
  # measured as "within the largest bound not above S" (600 -> 512): an image between the two
  # counts as late. The alert errs toward firing, never toward missing a breach; choose S among
  # the bounds to measure it exactly.
  slo_bound = max([for b in local.replication_buckets : b if b <= var.replication_slo.within_seconds]...)
  slo_ratio = var.replication_slo.percent / 100
}

resource "google_monitoring_alert_policy" "replication_slow" {
  count = var.managed_prometheus ? 1 : 0

  project               = var.project_id
  display_name          = "${var.name}: replication objective missed (slow copies)"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "under ${var.replication_slo.percent} % of images in place within ${local.slo_bound} s of publication, last hour"
    condition_prometheus_query_language {
      query = templatefile("${path.module}/monitoring/replication-slo.promql.tftpl", {
        service_name = google_cloud_run_v2_service.relay.name
        slo_bound    = local.slo_bound
        slo_ratio    = local.slo_ratio
        slo_window   = "1h"
      })
      # The query already looks at a whole hour: a late image keeps it below the objective for
      # that hour, so waiting longer would add nothing but delay.
      duration            = "0s"
      evaluation_interval = "60s"
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      Fewer than ${var.replication_slo.percent} % of the images ${var.name} replicated in the last hour were in place at
      their target within ${local.slo_bound} s of being published (objective: ${var.replication_slo.within_seconds} s).
      Look at the dashboard "image-relay: ${var.name}": is it every target or one (copies by target), retries
      (deliveries by outcome: retry, throttled), held images, registry 429s (push responses, relay logs
      "retrying")? Runbook: terraform/README.md, "Replication objective".
    EOT
  }
}

resource "google_monitoring_alert_policy" "replication_waiting" {
  project               = var.project_id
  display_name          = "${var.name}: replication objective missed (notifications waiting)"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "oldest unacked notification older than ${var.replication_slo.within_seconds} s"
    condition_threshold {
      filter          = "resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=\"${local.delivery_subscription}\" AND metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.replication_slo.within_seconds
      # The age is a duration already: past the objective, the waiting image is late.
      duration = "0s"

      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      A notification has waited more than ${var.replication_slo.within_seconds} s in `${local.delivery_subscription}`
      without ${var.name} acknowledging it: its image, if a rule wants it, is not at its targets yet.
      Usually a target answering 503 or 429 (the relay asks Pub/Sub to redeliver, with backoff), the relay at
      max_instances, or the relay down. Runbook: terraform/README.md, "Replication objective".
    EOT
  }
}
