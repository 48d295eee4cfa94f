//! image-relay: replicate release images from a source registry to target registries,
//! byte-exact, streaming and verified.
//!
//! The data's path through the program: a request names images ([`reference`]), the
//! [`copy`] engine plans what each target lacks from the source's [`manifest`]s, and
//! [`registry`] speaks the distribution protocol with the settings of rule files'
//! registry tables ([`registry::settings`]).

pub mod attestation;
pub mod cli;
pub mod copy;
pub mod event;
pub mod google_api;
pub mod http;
pub mod manifest;
pub mod push_auth;
pub mod reconcile;
pub mod reference;
pub mod registry;
pub mod relay;
pub mod rules;
pub mod serve;
pub mod signature;
pub mod telemetry;
pub mod vulnerability;
