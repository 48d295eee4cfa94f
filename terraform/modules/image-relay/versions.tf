terraform {
  # optional() attribute defaults in object types need 1.3; 1.5 is the oldest release still
  # widely packaged that we are willing to support.
  required_version = ">= 1.5"

  required_providers {
    google = {
      source = "hashicorp/google"
      # 6.x: google_cloud_run_v2_service has deletion_protection and the v2 secret-volume shape
      # used here; 7.0 may change defaults, so a major upgrade is a deliberate edit.
      version = "~> 6.0"
    }
  }
}
