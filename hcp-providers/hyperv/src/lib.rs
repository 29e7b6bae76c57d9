//! # hcp-provider-hyperv
//!
//! Hyper-V over WinRM, running HCP's own versioned PowerShell scripts.
