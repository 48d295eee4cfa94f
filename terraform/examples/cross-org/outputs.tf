output "service_url" {
  description = "URL of the relay (authenticated)."
  value       = module.image_relay.service_url
}

output "relay_service_account_email" {
  description = "Give this to partners: the principal they grant access to."
  value       = module.image_relay.relay_service_account_email
}

output "delivery_id" {
  description = "Push subscription id, or Eventarc trigger id."
  value       = module.image_relay.delivery_id
}

output "dead_letter_subscription" {
  description = "Where notifications that could not be delivered are kept."
  value       = module.image_relay.dead_letter_subscription
}

output "partner_grants" {
  description = "Grants partners must make themselves (targets with grant_iam = false)."
  value       = module.image_relay.partner_grants
}

output "eventarc_subscription_update_command" {
  description = "delivery = \"eventarc\" only: run once after apply to give Eventarc's subscription the retry and dead-letter policy."
  value       = module.image_relay.eventarc_subscription_update_command
}

output "audit_dataset_id" {
  description = "Audit dataset (audit_destination = \"bigquery\"), else null."
  value       = module.image_relay.audit_dataset_id
}

output "audit_table" {
  description = "Table to query for the audit trail (audit_destination = \"bigquery\"), else null."
  value       = module.image_relay.audit_table
}

output "audit_bucket" {
  description = "Audit bucket (audit_destination = \"bucket\"), else null."
  value       = module.image_relay.audit_bucket
}

output "dashboard_id" {
  description = "The Cloud Monitoring dashboard of the relay."
  value       = module.image_relay.dashboard_id
}

output "replication_slo" {
  description = "The replication objective as the alerts measure it (measured_within_seconds: the histogram bound counted against)."
  value       = module.image_relay.replication_slo
}
