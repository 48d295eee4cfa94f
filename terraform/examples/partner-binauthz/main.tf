# The partner's side of the release attestation, applied in the partner's own project: a note
# the relay attests on, an attestor that trusts the relay's KMS key, and a Binary
# Authorization policy that admits only images the relay released (after its gates passed).
# The relay's rules then say `attest = { key = var.relay_key_version, note = "projects/PARTNER/notes/released-by-relay" }`.

provider "google" {
  project = var.project_id
}

resource "google_container_analysis_note" "released" {
  project = var.project_id
  name    = "released-by-relay"
  attestation_authority {
    hint {
      human_readable_name = "Released by image-relay after its release gates passed"
    }
  }
}

# The relay's public key, read from its KMS key version (the private key never leaves KMS).
data "google_kms_crypto_key_version" "relay" {
  crypto_key = join("/", slice(split("/", var.relay_key_version), 0, 8))
  version    = tonumber(split("/", var.relay_key_version)[9])
}

resource "google_binary_authorization_attestor" "released" {
  project = var.project_id
  name    = "released-by-relay"
  attestation_authority_note {
    note_reference = google_container_analysis_note.released.name
    public_keys {
      # How the relay names the key in each signature it files.
      id = "//cloudkms.googleapis.com/v1/${var.relay_key_version}"
      pkix_public_key {
        public_key_pem      = data.google_kms_crypto_key_version.relay.public_key[0].pem
        signature_algorithm = data.google_kms_crypto_key_version.relay.public_key[0].algorithm
      }
    }
  }
}

# What the relay needs here to file its attestations (granted by the partner, who owns them).
resource "google_container_analysis_note_iam_member" "relay_attaches" {
  project = var.project_id
  note    = google_container_analysis_note.released.name
  role    = "roles/containeranalysis.notes.attacher"
  member  = "serviceAccount:${var.relay_service_account}"
}

resource "google_project_iam_member" "relay_files_occurrences" {
  project = var.project_id
  role    = "roles/containeranalysis.occurrences.editor"
  member  = "serviceAccount:${var.relay_service_account}"
}

# Only images the relay attested run on the partner's clusters and Cloud Run services.
resource "google_binary_authorization_policy" "require_release" {
  project = var.project_id

  global_policy_evaluation_mode = "ENABLE"
  default_admission_rule {
    evaluation_mode         = "REQUIRE_ATTESTATION"
    enforcement_mode        = "ENFORCED_BLOCK_AND_AUDIT_LOG"
    require_attestations_by = [google_binary_authorization_attestor.released.name]
  }
}
