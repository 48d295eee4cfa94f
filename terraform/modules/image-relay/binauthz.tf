# Binary Authorization: the attestation gate reads attestors and their attestations; the
# release attestation signs with a KMS key and files an occurrence on the partner's note.
# Every grant exists only when the variable that needs it is set, and each is one additive
# member on the narrowest resource the role applies to.

locals {
  attestors = {
    for a in var.attestors : a.name => {
      project      = split("/", a.name)[1]
      attestor     = split("/", a.name)[3]
      note_project = coalesce(a.note_project, split("/", a.name)[1])
    }
  }
  attestation_note_projects = toset([for a in values(local.attestors) : a.note_project])

  release = var.release_attestation == null ? null : {
    # The key's IAM is on the crypto key; a version has none of its own.
    crypto_key   = join("/", slice(split("/", var.release_attestation.key), 0, 8))
    note_project = split("/", var.release_attestation.note)[1]
    note         = split("/", var.release_attestation.note)[3]
  }
}

resource "google_binary_authorization_attestor_iam_member" "relay_reads_attestor" {
  for_each = local.attestors

  project  = each.value.project
  attestor = each.value.attestor
  # The attestor's note reference and public keys: what a signature is verified against.
  role   = "roles/binaryauthorization.attestorsViewer"
  member = local.relay_member
}

resource "google_project_iam_member" "relay_reads_attestations" {
  for_each = local.attestation_note_projects

  project = each.value
  # Occurrences have no IAM of their own: the viewer role is granted in the note's project.
  role   = "roles/containeranalysis.occurrences.viewer"
  member = local.relay_member
}

resource "google_kms_crypto_key_iam_member" "relay_signs_releases" {
  count = local.release == null ? 0 : 1

  crypto_key_id = local.release.crypto_key
  # asymmetricSign only: the relay cannot read, export or rotate the key.
  role   = "roles/cloudkms.signer"
  member = local.relay_member
}

resource "google_container_analysis_note_iam_member" "relay_attaches_to_note" {
  count = local.release == null ? 0 : 1

  project = local.release.note_project
  note    = local.release.note
  role    = "roles/containeranalysis.notes.attacher"
  member  = local.relay_member
}

resource "google_project_iam_member" "relay_files_release_attestations" {
  count = local.release == null ? 0 : 1

  project = local.release.note_project
  # Creating the occurrence itself; it lives in the note's project, beside the partner's
  # attestor, where its Binary Authorization policy looks.
  role   = "roles/containeranalysis.occurrences.editor"
  member = local.relay_member
}
