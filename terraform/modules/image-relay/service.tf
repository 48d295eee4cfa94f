# The rule file travels through Secret Manager rather than being baked into the image: rules
# change far more often than the relay, and a rules change should not need an image build.
resource "google_secret_manager_secret" "rules" {
  project   = var.project_id
  secret_id = "${var.name}-rules"
  labels    = local.labels

  replication {
    # Kept in the service's region: the file names partner registries and accounts, and the
    # relay is the only reader.
    user_managed {
      replicas {
        location = var.region
        dynamic "customer_managed_encryption" {
          for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
          content {
            kms_key_name = customer_managed_encryption.value
          }
        }
      }
    }
  }

  depends_on = [
    google_project_service.apis,
    google_kms_crypto_key_iam_member.agents,
  ]
}

resource "google_secret_manager_secret_version" "rules" {
  secret      = google_secret_manager_secret.rules.id
  secret_data = file(var.rules_file)
}

resource "google_secret_manager_secret_iam_member" "relay_reads_rules" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.rules.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = local.relay_member
}

resource "google_cloud_run_v2_service" "relay" {
  project             = var.project_id
  name                = var.name
  location            = var.region
  labels              = local.labels
  deletion_protection = var.deletion_protection
  # Pub/Sub push, Eventarc and Cloud Scheduler in this project count as internal traffic, so
  # the safe default loses nothing; see var.ingress.
  ingress = var.ingress

  template {
    labels          = local.labels
    service_account = google_service_account.relay.email
    # One delivery is one whole image copy to every target, answered only when done. Pub/Sub
    # waits at most its ack deadline (600 s maximum) for the answer, so the service allows the
    # same: a longer copy is cut at the same moment Pub/Sub would redeliver anyway.
    timeout                          = "600s"
    max_instance_request_concurrency = var.container_concurrency

    scaling {
      min_instance_count = 0
      max_instance_count = var.max_instances
    }

    containers {
      # Named, so that the Prometheus sidecar can wait for it (depends_on below).
      name  = "relay"
      image = var.image
      # The image's entrypoint is the image-relay binary with no default command.
      args = ["serve"]

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
      }

      env {
        name  = "RELAY_RULES"
        value = local.rules_path
      }
      # Cloud Run IAM already verified the push token's signature, audience and the caller's
      # roles/run.invoker; the relay only checks the token's email is the invoker account.
      env {
        name  = "RELAY_PUSH_AUTH"
        value = "platform"
      }
      env {
        name  = "RELAY_PUSH_EMAILS"
        value = google_service_account.invoker.email
      }
      env {
        name  = "RELAY_LOG_FORMAT"
        value = "json"
      }
      # Log lines link to the delivery's trace only as projects/PROJECT/traces/ID.
      env {
        name  = "GOOGLE_CLOUD_PROJECT"
        value = var.project_id
      }
      # Beyond this many copies the relay answers 429; matching Cloud Run's per-instance
      # concurrency means Cloud Run adds an instance before the relay has to refuse work.
      env {
        name  = "RELAY_MAX_COPIES"
        value = tostring(var.container_concurrency)
      }

      volume_mounts {
        name       = "rules"
        mount_path = local.rules_dir
      }

      startup_probe {
        http_get {
          path = "/readyz"
        }
        period_seconds    = 2
        failure_threshold = 30
      }

      liveness_probe {
        http_get {
          path = "/healthz"
        }
        period_seconds = 30
      }
    }

    # Managed Service for Prometheus: Google's collector scrapes the relay's /metrics on
    # localhost:8080 (its default RunMonitoring config: port 8080, path /metrics, every 30 s) and
    # writes the series to Cloud Monitoring, where the dashboard's PromQL tiles and the
    # replication objective read them (slo.tf). Without it nothing scrapes /metrics on Cloud
    # Run. It starts once the relay passes its startup probe, so its first scrape finds it.
    dynamic "containers" {
      for_each = var.managed_prometheus ? [var.prometheus_sidecar_image] : []
      content {
        name       = "prometheus"
        image      = containers.value
        depends_on = ["relay"]
        resources {
          # Cloud Run's default for a container, written out: it adds to the instance's size.
          limits = {
            cpu    = "1"
            memory = "512Mi"
          }
        }
      }
    }

    volumes {
      name = "rules"
      secret {
        secret = google_secret_manager_secret.rules.secret_id
        items {
          # Pinned to the version this apply wrote, not "latest": a rules change then rolls
          # out as a new revision, visible in the revision history and revertible like any
          # deploy, instead of changing under running instances.
          version = google_secret_manager_secret_version.rules.version
          path    = "rules.toml"
        }
      }
    }
  }

  depends_on = [
    # A revision whose identity cannot read its rules never becomes ready.
    google_secret_manager_secret_iam_member.relay_reads_rules,
    # Otherwise the sidecar's first writes of the relay's metrics are refused.
    google_project_iam_member.relay_writes_metrics,
    google_project_service.apis,
  ]
}
