//! `terraform-provider-hcp`: started by Terraform, never by hand. It prints the plugin
//! handshake on stdout and serves plugin protocol 6 until Terraform stops it.

use hcp_terraform::{HcpProvider, PROVIDER_NAME};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if std::env::var_os("TF_PLUGIN_MAGIC_COOKIE").is_none() {
        eprintln!(
            "terraform-provider-hcp is a Terraform plugin: Terraform starts it. Install it in a \
             provider mirror and use it from a configuration (see examples/terraform/)."
        );
        return std::process::ExitCode::from(2);
    }
    // Ctrl-C reaches the whole process group. Like every Terraform plugin, the provider leaves
    // interrupts to Terraform, which asks in-flight operations to finish (StopProvider) and
    // ends the plugin itself; an interrupt must not cut a create between HCP's answer and
    // Terraform's state.
    tokio::spawn(async {
        loop {
            if tokio::signal::ctrl_c().await.is_err() {
                break;
            }
        }
    });
    match tf_provider::serve(PROVIDER_NAME, HcpProvider::new()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("terraform-provider-hcp: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
