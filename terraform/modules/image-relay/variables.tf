variable "project_id" {
  description = "Source project: holds the source Artifact Registry repositories and its `gcr` Pub/Sub topic; the relay runs here."
  type        = string
}

variable "region" {
  description = "Region of the Cloud Run service, the rules secret, the Eventarc trigger and the Cloud Scheduler job. Put it next to the source repositories: every blob is read from there."
  type        = string
}

variable "name" {
  description = "Base name of everything the module creates (service, service accounts, subscriptions, topics, metric). The invoker service account appends \"-invoker\", so at most 22 characters."
  type        = string
  default     = "image-relay"

  validation {
    # Service account ids are 6-30 characters; "<name>-invoker" must fit.
    condition     = can(regex("^[a-z][a-z0-9-]{4,20}[a-z0-9]$", var.name))
    error_message = "name must be 6-22 characters: lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "image" {
  description = "Container image of image-relay, preferably pinned by digest (REGION-docker.pkg.dev/PROJECT/REPO/image-relay@sha256:...)."
  type        = string
}

variable "rules_file" {
  description = "Path of the rule file (TOML) to deploy. It is stored in Secret Manager and mounted at /etc/image-relay/rules.toml. Registries in it should use `auth = \"google\"` (with `impersonate = \"SA_EMAIL\"` where a partner asked for it)."
  type        = string
}

variable "source_repositories" {
  description = "Artifact Registry repositories in project_id that rules copy from; the relay gets roles/artifactregistry.reader on each. location defaults to region (use e.g. \"us\" for a multi-region repository)."
  type = list(object({
    repository = string
    location   = optional(string)
  }))

  validation {
    condition     = length(var.source_repositories) > 0
    error_message = "Name at least one source repository."
  }
}

variable "target_repositories" {
  description = <<-EOT
    Artifact Registry repositories the relay writes to; they may be in other projects and other organizations.
    - project, location, repository: where the repository is.
    - impersonate: optional email of a service account the target's owner controls and has given write access to the repository; the relay then gets roles/iam.serviceAccountTokenCreator on that account instead of roles/artifactregistry.writer on the repository.
    - grant_iam: false when whoever runs Terraform cannot change IAM in the target project (typically another organization): the module then creates no grant for this target and the `partner_grants` output says what the owner must grant.
  EOT
  type = list(object({
    project     = string
    location    = string
    repository  = string
    impersonate = optional(string)
    grant_iam   = optional(bool, true)
  }))

  validation {
    condition = alltrue([
      for t in var.target_repositories :
      t.impersonate == null || can(regex("^[^@\\s]+@[^@\\s]+\\.gserviceaccount\\.com$", t.impersonate))
    ])
    error_message = "impersonate must be a service account email (…@….gserviceaccount.com)."
  }
}

variable "delivery" {
  description = "How notifications reach the service: \"push\" (a Pub/Sub push subscription managed here, with retry policy and dead-lettering) or \"eventarc\" (an Eventarc trigger on the same topic)."
  type        = string
  default     = "push"

  validation {
    condition     = contains(["push", "eventarc"], var.delivery)
    error_message = "delivery must be \"push\" or \"eventarc\"."
  }
}

variable "ingress" {
  description = <<-EOT
    Cloud Run ingress. INGRESS_TRAFFIC_INTERNAL_ONLY (default) still admits Pub/Sub push, Eventarc and Cloud Scheduler requests, because they come from the service's own project; IAM (roles/run.invoker) authenticates them in every case.
    Use INGRESS_TRAFFIC_ALL only if something outside the project or VPC-SC perimeter must call the service, e.g. a subscription in another project.
  EOT
  type        = string
  default     = "INGRESS_TRAFFIC_INTERNAL_ONLY"

  validation {
    condition     = contains(["INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER", "INGRESS_TRAFFIC_ALL"], var.ingress)
    error_message = "ingress must be INGRESS_TRAFFIC_INTERNAL_ONLY, INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER or INGRESS_TRAFFIC_ALL."
  }
}

variable "container_concurrency" {
  description = "Deliveries one instance handles at once (Cloud Run max_instance_request_concurrency; also passed as RELAY_MAX_COPIES). Each is a whole image copy, bandwidth- and memory-bound, so keep it low and let Cloud Run add instances."
  type        = number
  default     = 8

  validation {
    condition     = var.container_concurrency >= 1 && var.container_concurrency <= 1000
    error_message = "container_concurrency must be between 1 and 1000."
  }
}

variable "max_instances" {
  description = "Upper bound on Cloud Run instances: caps cost and the load put on target registries. Deliveries beyond capacity are retried by Pub/Sub with backoff."
  type        = number
  default     = 5

  validation {
    condition     = var.max_instances >= 1
    error_message = "max_instances must be at least 1."
  }
}

variable "cpu" {
  description = "CPU limit of the relay container (Cloud Run accepts 1, 2, 4, 8)."
  type        = string
  default     = "2"
}

variable "memory" {
  description = "Memory limit of the relay container. Blobs are streamed, never buffered whole, so memory depends on concurrency, not on image size."
  type        = string
  default     = "1Gi"
}

variable "max_delivery_attempts" {
  description = "Deliveries of one notification before Pub/Sub moves it to the dead-letter topic (5-100)."
  type        = number
  default     = 10

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be between 5 and 100 (Pub/Sub's limits)."
  }
}

variable "retry_minimum_backoff" {
  description = "Shortest wait before Pub/Sub redelivers a notification the relay answered with 429/503 (duration, e.g. \"10s\")."
  type        = string
  default     = "10s"
}

variable "retry_maximum_backoff" {
  description = "Longest wait between redeliveries (duration, at most \"600s\")."
  type        = string
  default     = "600s"
}

variable "dead_letter_retention" {
  description = "How long the dead-letter subscription keeps failed notifications (duration, at most \"604800s\" = 7 days)."
  type        = string
  default     = "604800s"
}

variable "reconcile_schedule" {
  description = "Cron schedule (e.g. \"0 */6 * * *\") of a Cloud Scheduler job that calls POST /sync, the reconcile endpoint that catches up anything a lost or dead-lettered notification missed. Null: no job (events alone keep targets in line while nothing is lost)."
  type        = string
  default     = null
}

variable "reconcile_time_zone" {
  description = "Time zone of reconcile_schedule (tz database name)."
  type        = string
  default     = "Etc/UTC"
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channel ids (projects/PROJECT/notificationChannels/ID) the alert policies notify. Empty: incidents are only visible in the console."
  type        = list(string)
  default     = []
}

variable "enable_apis" {
  description = "Enable the Google APIs the deployment uses in project_id. They are never disabled on destroy, because other workloads may use them."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Refuse to destroy the Cloud Run service until this is set to false and applied."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels added to every resource that takes them."
  type        = map(string)
  default     = {}
}

variable "kms_key_name" {
  description = "Optional Cloud KMS key (projects/P/locations/REGION/keyRings/R/cryptoKeys/K, in var.region) for the dead-letter topic, the rules secret and the audit dataset or bucket, for organizations that require CMEK. The module grants the Pub/Sub and Secret Manager service agents, and the BigQuery or Cloud Storage agent of the audit destination, roles/cloudkms.cryptoKeyEncrypterDecrypter on it; the Secret Manager agent must already exist (`gcloud beta services identity create --service=secretmanager.googleapis.com`). The audit destination must then be in the key's location (audit_location). Null: Google-managed encryption."
  type        = string
  default     = null
}

variable "audit_destination" {
  description = "Where a Cloud Logging sink routes the relay's audit records (one JSON log line per decision, carrying `jsonPayload.audit`): \"bigquery\" (a dataset of partitioned tables, queryable with SQL; see the README for the query) or \"bucket\" (a Cloud Storage bucket of hourly JSON files, for archiving)."
  type        = string
  default     = "bigquery"

  validation {
    condition     = contains(["bigquery", "bucket"], var.audit_destination)
    error_message = "audit_destination must be \"bigquery\" or \"bucket\"."
  }
}

variable "audit_location" {
  description = "Location of the audit dataset or bucket: a region (\"europe-west1\") or a multi-region (\"US\", \"EU\"). Null: var.region. With kms_key_name set it must be the key's location."
  type        = string
  default     = null
}

variable "audit_retention_days" {
  description = "Days audit records are kept. BigQuery: the dataset's default partition expiration, so each day's partition is deleted when it is this old (a default *table* expiration would instead delete the whole table, recent records included, this long after the sink created it). Bucket: a lifecycle rule deletes objects, and their noncurrent versions, this long after they were written. Null: kept until someone deletes them."
  type        = number
  default     = null

  validation {
    condition     = var.audit_retention_days == null ? true : (var.audit_retention_days >= 1 && floor(var.audit_retention_days) == var.audit_retention_days)
    error_message = "audit_retention_days must be a whole number of days, at least 1 (or null to keep records)."
  }
}

variable "vulnerability_gate" {
  description = "Set true when a rule uses `vulnerabilities = {...}`: the relay then reads the source images' Artifact Analysis vulnerability occurrences, so its service account gets roles/containeranalysis.occurrences.viewer on project_id and, with enable_apis, containeranalysis.googleapis.com is enabled. Occurrences exist only if the images are scanned (automatic scanning, containerscanning.googleapis.com, is billed per image and is left to you)."
  type        = bool
  default     = false
}

variable "managed_prometheus" {
  description = "Run Google's Managed Service for Prometheus sidecar beside the relay: it scrapes the relay's /metrics (localhost:8080, every 30 s, and once more when an instance stops) into Cloud Monitoring, for the dashboard's relay tiles and the slow-copies half of the replication objective. The relay's service account gets roles/monitoring.metricWriter on project_id. False: no sidecar and no grant; the dashboard's PromQL tiles stay empty and only the waiting-notifications alert watches the objective."
  type        = bool
  default     = true
}

variable "prometheus_sidecar_image" {
  description = "Image of the Managed Service for Prometheus sidecar for Cloud Run (Google's, in us-docker.pkg.dev/cloud-ops-agents-artifacts). Pin it by digest where images must be."
  type        = string
  default     = "us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar:1.2.0"
}

variable "replication_slo" {
  description = <<-EOT
    The replication objective: `percent` % of images in place at their targets within `within_seconds` of Artifact Registry publishing them, measured over the last hour. Two alert policies watch it (slo.tf): the share of replications within the bound (from the relay's publish-to-replicated histogram; needs managed_prometheus), and the age of the oldest notification still unacked in the delivery subscription.
    The histogram's buckets double from 0.25 s (1, 2, 4, ... 512, 1024, ... 8192), and an image is counted on time only within the largest bound not above within_seconds (600 is measured as 512): the alert errs toward firing. See terraform/README.md, "Replication objective".
  EOT
  type = object({
    percent        = number
    within_seconds = number
  })
  default  = { percent = 99, within_seconds = 600 }
  nullable = false

  validation {
    # 100 % leaves no error budget: one slow image, e.g. behind a registry outage, would breach it.
    condition     = var.replication_slo.percent > 0 && var.replication_slo.percent < 100
    error_message = "replication_slo.percent must be above 0 and below 100."
  }

  validation {
    # Within the histogram's bounds; beyond 8192 s, the last bucket is +Inf and says nothing.
    condition     = var.replication_slo.within_seconds >= 1 && var.replication_slo.within_seconds <= 8192
    error_message = "replication_slo.within_seconds must be between 1 and 8192 (the relay's latency histogram ends at 8192 s)."
  }
}

variable "attestors" {
  description = "Binary Authorization attestors that rules gate on (`require_attestation = { attestors = [...] }`): `name` is `projects/P/attestors/A`, `note_project` the project of the note the attestor names (defaults to the attestor's project). The relay's service account gets roles/binaryauthorization.attestorsViewer on each attestor (to read its note and public keys) and roles/containeranalysis.occurrences.viewer in each note project (to read the attestations). Empty: no grants."
  type = list(object({
    name         = string
    note_project = optional(string)
  }))
  default = []
  validation {
    condition     = alltrue([for a in var.attestors : can(regex("^projects/[^/]+/attestors/[^/]+$", a.name))])
    error_message = "Each attestors[].name must be projects/PROJECT/attestors/NAME."
  }
}

variable "release_attestation" {
  description = "The release attestation rules create with `attest = { key, note }`: `key` is the Cloud KMS key version that signs (`projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/V`; the key never leaves KMS), `note` the partner's note (`projects/PARTNER/notes/N`). The relay's service account gets roles/cloudkms.signer on the key, roles/containeranalysis.notes.attacher on the note and roles/containeranalysis.occurrences.editor in the note's project; the partner must allow these grants (or make them) in its own project. Null: no grants."
  type = object({
    key  = string
    note = string
  })
  default = null
  validation {
    condition = var.release_attestation == null || (
      can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+/cryptoKeyVersions/[^/]+$", var.release_attestation.key)) &&
      can(regex("^projects/[^/]+/notes/[^/]+$", var.release_attestation.note))
    )
    error_message = "release_attestation.key must name a KMS key version and release_attestation.note a note (projects/P/notes/N)."
  }
}
