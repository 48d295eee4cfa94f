# How notifications on the `gcr` topic reach the relay, and where the ones it cannot take end up.

# ---------------------------------------------------------------------------------------------
# Dead letters (both delivery modes). The relay answers 400/401 to deliveries no retry can fix
# and 503/429 to ones a retry may fix; either way, after max_delivery_attempts Pub/Sub parks
# the notification here instead of dropping it, for an operator to inspect and replay.
# ---------------------------------------------------------------------------------------------

resource "google_pubsub_topic" "dead_letter" {
  # checkov passes CKV_GCP_83 only because kms_key_name is set to a variable; with the default
  # (null) the topic uses Google-managed keys, so the finding is recorded as skipped on purpose:
  #checkov:skip=CKV_GCP_83:CMEK is opt-in via var.kms_key_name (null by default): the topic holds only Artifact Registry notifications (action, image, digest, tag), nothing secret, and a module-owned KMS key ring could never be deleted, breaking destroy and re-create
  project = var.project_id
  name    = "${var.name}-dead-letter"
  labels  = local.labels
  # Null unless the organization requires CMEK; see var.kms_key_name.
  kms_key_name = var.kms_key_name

  depends_on = [
    google_project_service.apis,
    google_kms_crypto_key_iam_member.agents,
  ]
}

# A topic keeps nothing by itself: without a subscription, dead-lettered messages would vanish.
resource "google_pubsub_subscription" "dead_letter" {
  project = var.project_id
  name    = "${var.name}-dead-letter"
  topic   = google_pubsub_topic.dead_letter.id
  labels  = local.labels

  message_retention_duration = var.dead_letter_retention
  # Pulling a message to look at it must not lose it: acknowledged messages stay until the
  # retention ends, so an operator can still seek back and replay them.
  retain_acked_messages = true

  # Nobody pulls from this subscription in normal operation; the default 31-day inactivity
  # expiry would delete it exactly when it has been quiet the longest.
  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_topic_iam_member" "pubsub_publishes_dead_letters" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

# Dead-lettering also needs the agent to acknowledge the original on the source subscription.
resource "google_pubsub_subscription_iam_member" "pubsub_forwards_dead_letters" {
  project      = var.project_id
  subscription = local.push ? google_pubsub_subscription.push[0].name : google_eventarc_trigger.relay[0].transport[0].pubsub[0].subscription
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# ---------------------------------------------------------------------------------------------
# delivery = "push": a subscription on the project's existing `gcr` topic, owned here.
# ---------------------------------------------------------------------------------------------

resource "google_pubsub_subscription" "push" {
  count = local.push ? 1 : 0

  project = var.project_id
  name    = "${var.name}-push"
  topic   = data.google_pubsub_topic.gcr.id
  labels  = local.labels

  # For push, the ack deadline is the HTTP timeout of each delivery, and one delivery is a whole
  # image copy: give it Pub/Sub's maximum, the same as the service's request timeout.
  ack_deadline_seconds = 600

  # The relay answers 429 when it is full and 503 when a target is down: back off instead of
  # hammering a registry that is already struggling.
  retry_policy {
    minimum_backoff = var.retry_minimum_backoff
    maximum_backoff = var.retry_maximum_backoff
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  # A relay that is down for a month must still find its subscription when it comes back.
  expiration_policy {
    ttl = ""
  }

  push_config {
    push_endpoint = google_cloud_run_v2_service.relay.uri
    oidc_token {
      service_account_email = google_service_account.invoker.email
      audience              = google_cloud_run_v2_service.relay.uri
    }
  }

  depends_on = [
    # Deliveries before these grants exist would fail and count as attempts.
    google_cloud_run_v2_service_iam_member.invoker,
    google_service_account_iam_member.pubsub_mints_invoker_tokens,
    google_pubsub_topic_iam_member.pubsub_publishes_dead_letters,
  ]
}

# ---------------------------------------------------------------------------------------------
# delivery = "eventarc": Eventarc creates and owns its own subscription on the `gcr` topic.
# Its ack deadline, retry policy and dead-letter policy are not settable through the trigger:
# the `eventarc_subscription_update_command` output applies the same settings as push mode.
# ---------------------------------------------------------------------------------------------

resource "google_eventarc_trigger" "relay" {
  count = local.push ? 0 : 1

  project  = var.project_id
  name     = var.name
  location = var.region
  labels   = local.labels

  matching_criteria {
    attribute = "type"
    value     = "google.cloud.pubsub.topic.v1.messagePublished"
  }

  transport {
    pubsub {
      topic = data.google_pubsub_topic.gcr.id
    }
  }

  destination {
    cloud_run_service {
      service = google_cloud_run_v2_service.relay.name
      region  = var.region
      path    = "/"
    }
  }

  # Pub/Sub-sourced triggers need only run.invoker on the destination; no
  # roles/eventarc.eventReceiver.
  service_account = google_service_account.invoker.email

  depends_on = [
    google_cloud_run_v2_service_iam_member.invoker,
    google_service_account_iam_member.pubsub_mints_invoker_tokens,
  ]
}

# ---------------------------------------------------------------------------------------------
# Reconcile: a periodic POST /sync that catches up on anything a lost or dead-lettered
# notification missed. /sync arrives with the relay's reconcile feature, so the job exists only
# when var.reconcile_schedule is set.
# ---------------------------------------------------------------------------------------------

resource "google_cloud_scheduler_job" "reconcile" {
  count = var.reconcile_schedule == null ? 0 : 1

  project     = var.project_id
  region      = var.region
  name        = "${var.name}-reconcile"
  description = "Calls POST /sync on ${var.name}: copies whatever the rules select that the targets lack."
  schedule    = var.reconcile_schedule
  time_zone   = var.reconcile_time_zone
  # A reconcile may copy several images; allow what the service allows one request.
  attempt_deadline = "600s"

  http_target {
    http_method = "POST"
    uri         = "${google_cloud_run_v2_service.relay.uri}/sync"
    oidc_token {
      # The same caller identity as the deliveries: it is the one RELAY_PUSH_EMAILS admits.
      service_account_email = google_service_account.invoker.email
      audience              = google_cloud_run_v2_service.relay.uri
    }
  }

  depends_on = [google_cloud_run_v2_service_iam_member.invoker]
}
