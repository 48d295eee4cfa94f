variable "project_id" {
  description = "The partner's project: where the note, the attestor and the policy live."
  type        = string
}

variable "relay_service_account" {
  description = "The relay's service account email (the module's `relay_service_account_email` output)."
  type        = string
}

variable "relay_key_version" {
  description = "The Cloud KMS key version the relay signs release attestations with: projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/V."
  type        = string
}
