variable "project_id" {
  description = "Source project: where the source Artifact Registry repositories, their `gcr` topic and the relay live."
  type        = string
}

variable "region" {
  description = "Region of the relay (Cloud Run, rules secret, trigger, scheduler); normally the source repositories' region."
  type        = string
}

variable "source_repositories" {
  description = "Repositories in project_id the rules copy from; location defaults to region."
  type = list(object({
    repository = string
    location   = optional(string)
  }))
}

variable "target_repositories" {
  description = "Target Artifact Registry repositories, in any project or organization. impersonate: the owner's own service account the relay writes through (it gets roles/iam.serviceAccountTokenCreator on it instead of writer on the repository). grant_iam = false: the owner grants it themselves (see the partner_grants output)."
  type = list(object({
    project     = string
    location    = string
    repository  = string
    impersonate = optional(string)
    grant_iam   = optional(bool, true)
  }))
}

variable "image" {
  description = "image-relay container image, pinned by digest."
  type        = string
}

variable "rules_file" {
  description = "Path of the rule file to deploy (see rules.toml.example beside this file)."
  type        = string
}

variable "delivery" {
  description = "\"push\" (Pub/Sub push subscription) or \"eventarc\" (Eventarc trigger)."
  type        = string
  default     = "push"
}

variable "reconcile_schedule" {
  description = "Cron schedule for POST /sync (reconcile); null for no job."
  type        = string
  default     = null
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channel ids for the relay's alerts."
  type        = list(string)
  default     = []
}

variable "kms_key_name" {
  description = "Optional Cloud KMS key (in region, or in audit_location if that is set) for the dead-letter topic, the rules secret and the audit dataset or bucket, where the organization requires CMEK; null for Google-managed encryption."
  type        = string
  default     = null
}

variable "audit_destination" {
  description = "Where the relay's audit records (one per decision) are routed: \"bigquery\" (dataset, query with SQL) or \"bucket\" (Cloud Storage archive)."
  type        = string
  default     = "bigquery"
}

variable "audit_location" {
  description = "Region or multi-region (\"US\", \"EU\") of the audit dataset or bucket; null for region."
  type        = string
  default     = null
}

variable "audit_retention_days" {
  description = "Days audit records are kept (BigQuery partition expiration, or bucket lifecycle deletion); null to keep them until deleted by hand."
  type        = number
  default     = null
}

variable "vulnerability_gate" {
  description = "Set true when a rule uses `vulnerabilities = {...}`: grants the relay roles/containeranalysis.occurrences.viewer on project_id and enables the Container Analysis API."
  type        = bool
  default     = false
}

variable "managed_prometheus" {
  description = "Run the Managed Service for Prometheus sidecar, so that the relay's own metrics reach Cloud Monitoring (dashboard tiles, the slow-copies alert of the replication objective)."
  type        = bool
  default     = true
}

variable "replication_slo" {
  description = "The replication objective: percent of images in place at their targets within within_seconds of being published, over the last hour (see the module's README)."
  type = object({
    percent        = number
    within_seconds = number
  })
  default = { percent = 99, within_seconds = 600 }
}

variable "attestors" {
  description = "Binary Authorization attestors rules gate on (`require_attestation`): the relay may read them and their attestations. See the module's variable."
  type = list(object({
    name         = string
    note_project = optional(string)
  }))
  default = []
}

variable "release_attestation" {
  description = "The KMS key version and partner note of rules' `attest = { key, note }`; the partner side is in ../partner-binauthz. Null: none."
  type = object({
    key  = string
    note = string
  })
  default = null
}
