//! # hcp-terraform
//!
//! `terraform-provider-hcp`: a Terraform provider (plugin protocol 6, through the `tf-provider`
//! crate) that drives HCP's HTTP API through [`hcp_client`] and nothing else.
//!
//! It offers:
//! - the provider configuration: `url`, `token` (or `HCP_URL` / `HCP_TOKEN`), a default
//!   `project` (or `HCP_PROJECT`), `ca_file`, and timeouts per operation;
//! - the resource `hcp_vm` ([`vm::VmResource`]): create waits for the job and carries an
//!   idempotency key derived from the planned values, refresh detects power drift and VMs
//!   deleted out of band, power changes are in-place updates, every other change forces
//!   replacement, import takes `PROJECT/VM_ID`, destroy waits for the delete job; a VM joins
//!   a server group with `server_group`;
//! - the resource `hcp_server_group` ([`server_group::ServerGroupResource`]): a project's
//!   anti-affinity or affinity group, hard or soft, with its members;
//! - the data sources `hcp_images`, `hcp_flavors`, `hcp_zones` and `hcp_capabilities`
//!   ([`data`]).
//!
//! HCP's errors become Terraform diagnostics that carry the error code and, for an
//! `InvalidSpec` error, the attribute path of the field it names ([`diag`]).

mod common;
pub mod data;
pub mod diag;
pub mod provider;
pub mod server_group;
pub mod vm;

pub use provider::HcpProvider;

/// The provider's type name: resources are `hcp_<name>`.
pub const PROVIDER_NAME: &str = "hcp";
