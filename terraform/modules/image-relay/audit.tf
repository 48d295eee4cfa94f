# Audit trail: the relay writes exactly one audit record per decision, as a JSON log line whose
# `audit` object (time, message_id, action, source, digest, rule, targets[] of {target, outcome,
# reason, bytes, duration_ms}) lands in `jsonPayload.audit`, with `message` = "audit". Cloud
# Logging keeps those lines only for its default retention (30 days); this sink copies them,
# and only them, to a dataset or bucket kept as long as var.audit_retention_days says.

locals {
  audit_bigquery = var.audit_destination == "bigquery"
  audit_location = coalesce(var.audit_location, var.region)

  # BigQuery dataset ids allow letters, digits and underscores only.
  audit_dataset_id = "${replace(var.name, "-", "_")}_audit"

  # Cloud Run writes the container's stderr to the log run.googleapis.com/stderr, which the
  # sink's partitioned BigQuery export names run_googleapis_com_stderr.
  audit_table = "${var.project_id}.${local.audit_dataset_id}.run_googleapis_com_stderr"

  # CMEK needs the key in the same location as the data it protects.
  audit_kms_location_ok = var.kms_key_name == null ? true : (
    lower(try(regex("/locations/([^/]+)/", var.kms_key_name)[0], "")) == lower(local.audit_location)
  )
}

# The service agents that encrypt the audit data with var.kms_key_name; looked up only when a key
# is set (iam.tf grants them the key). Both calls also create the agent if it does not exist yet.
data "google_bigquery_default_service_account" "audit" {
  count   = var.kms_key_name != null && local.audit_bigquery ? 1 : 0
  project = var.project_id

  depends_on = [google_project_service.apis]
}

data "google_storage_project_service_account" "audit" {
  count   = var.kms_key_name != null && !local.audit_bigquery ? 1 : 0
  project = var.project_id

  depends_on = [google_project_service.apis]
}

resource "google_logging_project_sink" "audit" {
  #checkov:skip=CKV2_GCP_4:a locked retention policy (Bucket Lock) can never be shortened or removed and Cloud Storage refuses it on a versioned bucket; the bucket is versioned instead, with deletion only by the audit_retention_days lifecycle rule, and locking is left to the organization's compliance owner (the default destination is BigQuery anyway)
  project     = var.project_id
  name        = "${var.name}-audit"
  description = "Audit records of ${var.name} (one per decision: what was copied where, or why not) to the audit ${local.audit_bigquery ? "dataset" : "bucket"}. Managed by Terraform (modules/image-relay)."
  destination = (
    local.audit_bigquery
    ? "bigquery.googleapis.com/projects/${var.project_id}/datasets/${google_bigquery_dataset.audit[0].dataset_id}"
    : "storage.googleapis.com/${google_storage_bucket.audit[0].name}"
  )

  # `:*` is the Logging query language's "field is present" test: only the audit lines of this
  # service, none of its other log lines. Cloud Run names the service in every entry's resource.
  filter = <<-EOT
    resource.type="cloud_run_revision"
    AND resource.labels.service_name="${google_cloud_run_v2_service.relay.name}"
    AND jsonPayload.audit:*
  EOT

  # A service account of this sink's own, granted write on the destination only (below).
  unique_writer_identity = true

  dynamic "bigquery_options" {
    for_each = local.audit_bigquery ? [true] : []
    content {
      # One table partitioned by day (run_googleapis_com_stderr) instead of one table per day:
      # the dataset's partition expiration then applies, and queries need no _TABLE_SUFFIX.
      use_partitioned_tables = true
    }
  }
}

# ---------------------------------------------------------------------------------------------
# audit_destination = "bigquery"
# ---------------------------------------------------------------------------------------------

resource "google_bigquery_dataset" "audit" {
  count = local.audit_bigquery ? 1 : 0

  # checkov passes CKV_GCP_81 only because the dynamic block is wired to a variable; with the
  # default (null) the dataset uses Google-managed keys, so the finding is recorded as skipped:
  #checkov:skip=CKV_GCP_81:CMEK is opt-in via var.kms_key_name (null by default), as for the topic and the secret: the records name images, digests and target registries, nothing secret, and a module-owned KMS key ring could never be deleted, breaking destroy and re-create
  project       = var.project_id
  dataset_id    = local.audit_dataset_id
  friendly_name = "${var.name} audit trail"
  description   = "Audit records of image-relay ${var.name}, routed by the ${var.name}-audit log sink (table run_googleapis_com_stderr, field jsonPayload.audit). Managed by Terraform (modules/image-relay)."
  location      = local.audit_location
  labels        = local.labels

  # Retention per day of records, not per table: see var.audit_retention_days. No default table
  # expiration, which would drop the sink's whole table (and every record in it) at once.
  default_partition_expiration_ms = var.audit_retention_days == null ? null : var.audit_retention_days * 86400000

  # An audit trail is not deleted by accident: destroy fails while the sink's table exists.
  delete_contents_on_destroy = false

  dynamic "default_encryption_configuration" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      kms_key_name = default_encryption_configuration.value
    }
  }

  lifecycle {
    precondition {
      condition     = local.audit_kms_location_ok
      error_message = "kms_key_name must be in the audit dataset's location (audit_location, default region)."
    }
  }

  depends_on = [
    google_project_service.apis,
    google_kms_crypto_key_iam_member.agents,
  ]
}

resource "google_bigquery_dataset_iam_member" "audit_sink_writer" {
  count = local.audit_bigquery ? 1 : 0

  project    = var.project_id
  dataset_id = google_bigquery_dataset.audit[0].dataset_id
  # Creates the sink's table and streams rows into it; on this dataset only.
  role   = "roles/bigquery.dataEditor"
  member = google_logging_project_sink.audit.writer_identity
}

# ---------------------------------------------------------------------------------------------
# audit_destination = "bucket"
# ---------------------------------------------------------------------------------------------

resource "google_storage_bucket" "audit" {
  count = local.audit_bigquery ? 0 : 1

  #checkov:skip=CKV_GCP_62:usage logs would need a second bucket, itself unlogged; reads of the audit records are recorded by Cloud Audit Logs (Data Access logs for Cloud Storage, enabled per organization policy), which is where access to this bucket should be reviewed
  project  = var.project_id
  name     = "${var.project_id}-${var.name}-audit"
  location = local.audit_location
  labels   = local.labels

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  # An audit trail is not deleted by accident: destroy fails while the bucket holds records.
  force_destroy = false

  # An overwritten or deleted record stays as a noncurrent version until the lifecycle rule
  # below removes it. (A retention policy, Bucket Lock, would forbid deletion outright, but
  # Cloud Storage does not allow it together with versioning.)
  versioning {
    enabled = true
  }

  dynamic "lifecycle_rule" {
    for_each = var.audit_retention_days == null ? [] : [var.audit_retention_days]
    content {
      condition {
        # Age counts from when the object was written, for live and noncurrent versions alike,
        # so every record is kept the same number of days.
        age        = lifecycle_rule.value
        with_state = "ANY"
      }
      action {
        type = "Delete"
      }
    }
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  lifecycle {
    precondition {
      condition     = local.audit_kms_location_ok
      error_message = "kms_key_name must be in the audit bucket's location (audit_location, default region)."
    }
  }

  depends_on = [
    google_project_service.apis,
    google_kms_crypto_key_iam_member.agents,
  ]
}

resource "google_storage_bucket_iam_member" "audit_sink_writer" {
  count = local.audit_bigquery ? 0 : 1

  bucket = google_storage_bucket.audit[0].name
  # Creates objects; cannot read, overwrite or delete them.
  role   = "roles/storage.objectCreator"
  member = google_logging_project_sink.audit.writer_identity
}
