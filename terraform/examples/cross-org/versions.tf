terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.0"
    }
  }

  # State holds the rule file (it is the secret's payload): keep it in a bucket only the
  # platform team can read, e.g.
  # backend "gcs" {
  #   bucket = "acme-terraform-state"
  #   prefix = "image-relay"
  # }
}
