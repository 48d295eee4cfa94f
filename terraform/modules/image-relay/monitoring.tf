# A failed copy that no retry can fix (source image gone, manifest refused by a target) is
# acknowledged with 200 so Pub/Sub stops retrying: the ERROR log line is the only trace it
# leaves, so it is counted and alerted on. Counts by outcome are also on the relay's /metrics,
# but nothing scrapes that endpoint on Cloud Run without a collector; logs always arrive.
resource "google_logging_metric" "copy_failures" {
  project     = var.project_id
  name        = "${var.name}-copy-failures"
  description = "Image copies ${var.name} could not complete, by rule and target (ERROR lines \"copy failed: ...\")."
  filter      = <<-EOT
    resource.type="cloud_run_revision"
    resource.labels.service_name="${google_cloud_run_v2_service.relay.name}"
    severity=ERROR
    jsonPayload.message=~"^copy failed"
  EOT

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "${var.name} copy failures"

    labels {
      key         = "rule"
      value_type  = "STRING"
      description = "Rule whose copy failed."
    }
    labels {
      key         = "target"
      value_type  = "STRING"
      description = "Target the copy failed for."
    }
  }

  label_extractors = {
    rule   = "EXTRACT(jsonPayload.rule)"
    target = "EXTRACT(jsonPayload.target)"
  }
}

resource "google_monitoring_alert_policy" "copy_failures" {
  project               = var.project_id
  display_name          = "${var.name}: image copies failing"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = var.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "copy failures > 0"
    condition_threshold {
      filter          = "resource.type=\"cloud_run_revision\" AND metric.type=\"logging.googleapis.com/user/${google_logging_metric.copy_failures.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      # One failure is already an image a partner does not have.
      duration = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        # One incident per rule and target, so a broken partner does not hide another.
        group_by_fields = ["metric.label.rule", "metric.label.target"]
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
      image-relay (${var.name}) logged "copy failed" for rule $${metric.label.rule}, target $${metric.label.target}.
      The log line says why (registry, repository, object, HTTP status). A retryable failure (503 to Pub/Sub)
      is redelivered; a permanent one (source gone, manifest refused) is not: fix the cause, then push again
      or replay from the dead-letter subscription.
    EOT
  }
}

# Messages reach the dead-letter subscription only after max_delivery_attempts failed
# deliveries, and nothing consumes them automatically: any backlog needs a person.
resource "google_monitoring_alert_policy" "dead_letters" {
  project               = var.project_id
  display_name          = "${var.name}: notifications dead-lettered"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = var.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "dead-letter backlog > 0"
    condition_threshold {
      filter          = "resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=\"${google_pubsub_subscription.dead_letter.name}\" AND metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "604800s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      Notifications from the `gcr` topic were dead-lettered by ${var.name} after repeated failed deliveries
      (malformed, refused push token, or a target down for the whole retry window).
      Inspect: `gcloud pubsub subscriptions pull ${google_pubsub_subscription.dead_letter.id} --limit=10`
      (acknowledged messages are kept until retention ends). Once the cause is fixed, republish them to the
      `gcr` topic (or run the reconcile job) and acknowledge them here to clear the backlog.
    EOT
  }
}
