//! Where the Google APIs beside the registries live. Process settings (flags and environment,
//! parsed once in `cli`) handed to the constructors that call them, so a test points each one
//! at a fake on loopback and nothing below reads the environment.

/// Base URLs of the Google APIs the relay calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleApis {
    /// Container Analysis: vulnerability occurrences for the release gate.
    pub container_analysis: String,
    /// Artifact Registry: repository listing for `sync` (the registry has no `_catalog`).
    pub artifact_registry: String,
    /// IAM Credentials: access tokens of an impersonated service account.
    pub iam_credentials: String,
    /// Binary Authorization: the attestors the attestation gate reads.
    pub binary_authorization: String,
    /// Cloud KMS: signs the release attestation (the key never leaves it).
    pub cloud_kms: String,
}

pub const CONTAINER_ANALYSIS_URL: &str = "https://containeranalysis.googleapis.com";
pub const ARTIFACT_REGISTRY_URL: &str = "https://artifactregistry.googleapis.com";
pub const IAM_CREDENTIALS_URL: &str = "https://iamcredentials.googleapis.com";
pub const BINARY_AUTHORIZATION_URL: &str = "https://binaryauthorization.googleapis.com";
pub const CLOUD_KMS_URL: &str = "https://cloudkms.googleapis.com";

impl Default for GoogleApis {
    fn default() -> Self {
        GoogleApis {
            container_analysis: CONTAINER_ANALYSIS_URL.to_owned(),
            artifact_registry: ARTIFACT_REGISTRY_URL.to_owned(),
            iam_credentials: IAM_CREDENTIALS_URL.to_owned(),
            binary_authorization: BINARY_AUTHORIZATION_URL.to_owned(),
            cloud_kms: CLOUD_KMS_URL.to_owned(),
        }
    }
}
