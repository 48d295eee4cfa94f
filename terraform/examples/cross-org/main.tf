# One relay in the source project, copying to repositories in this organization and in
# partners' organizations. Everything it needs is a variable; see terraform.tfvars.example.

provider "google" {
  project = var.project_id
  region  = var.region
}

module "image_relay" {
  source = "../../modules/image-relay"

  project_id            = var.project_id
  region                = var.region
  image                 = var.image
  rules_file            = var.rules_file
  source_repositories   = var.source_repositories
  target_repositories   = var.target_repositories
  delivery              = var.delivery
  reconcile_schedule    = var.reconcile_schedule
  notification_channels = var.notification_channels
  kms_key_name          = var.kms_key_name
  audit_destination     = var.audit_destination
  audit_location        = var.audit_location
  audit_retention_days  = var.audit_retention_days
  vulnerability_gate    = var.vulnerability_gate
  managed_prometheus    = var.managed_prometheus
  replication_slo       = var.replication_slo
  attestors             = var.attestors
  release_attestation   = var.release_attestation
}
