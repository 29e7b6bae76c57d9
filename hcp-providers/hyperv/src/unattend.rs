//! Windows answer files: a per-image template with `{{variable}}` placeholders, rendered at job
//! time in memory (secrets are read then and never written to the template or to HCP's logs).
//!
//! Variables: `{{computer_name}}` (from the VM name: letters, digits and '-', at most 15
//! characters), `{{time_zone}}`, `{{locale}}`, `{{admin_password}}`, `{{domain_join}}` (a whole
//! `Microsoft-Windows-UnattendedJoin` component, or nothing), `{{first_logon_commands}}` (the
//! `<SynchronousCommand>` elements: the image's commands, then HCP's completion signal) and
//! `{{vm_id}}`. Every value is XML-escaped. An unknown placeholder is refused at start-up.

use hcp_core::{Error, Result, SecretString};

/// The guest-to-host KVP key the last first-logon command writes when setup has finished.
pub const SETUP_KEY: &str = "HcpSetupComplete";

/// The variables a template may use.
pub const VARIABLES: [&str; 7] = [
    "computer_name",
    "time_zone",
    "locale",
    "admin_password",
    "domain_join",
    "first_logon_commands",
    "vm_id",
];

/// What one answer file is rendered from.
pub struct Inputs<'a> {
    /// The VM name (the computer name is derived from it).
    pub vm_name: &'a str,
    /// HCP's VM id (the completion signal's value).
    pub vm_id: &'a str,
    /// The time zone id.
    pub time_zone: &'a str,
    /// The locale.
    pub locale: &'a str,
    /// The local Administrator password.
    pub admin_password: &'a SecretString,
    /// Domain, OU, join account and its password.
    pub domain_join: Option<(&'a str, Option<&'a str>, &'a SecretString, &'a SecretString)>,
    /// The image's first-logon commands.
    pub first_logon_commands: &'a [String],
}

/// Escapes text for XML element content and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// Derives the Windows computer name from a VM name: letters, digits and '-', at most 15
/// characters, not only digits.
///
/// # Errors
/// [`hcp_core::ErrorKind::InvalidSpec`] naming `name` when nothing usable remains.
pub fn computer_name(vm_name: &str) -> Result<String> {
    let cleaned: String = vm_name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(15)
        .collect();
    let cleaned = cleaned.trim_matches('-').to_string();
    if cleaned.is_empty() || cleaned.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::invalid(
            "name",
            "a Windows VM's name must give a computer name: letters, digits and '-', not only \
             digits (the first 15 are used)",
        ));
    }
    Ok(cleaned)
}

/// Checks a template: every `{{...}}` names a known variable.
///
/// # Errors
/// [`hcp_core::ErrorKind::InvalidSpec`] naming `field` and the unknown placeholder.
pub fn check_template(field: &str, template: &str) -> Result<()> {
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(Error::invalid(field, "has a `{{` without its `}}`"));
        };
        let name = after[..end].trim();
        if !VARIABLES.contains(&name) {
            return Err(Error::invalid(
                field,
                format!(
                    "uses the unknown variable `{{{{{}}}}}`; known: {}",
                    name.chars().take(40).collect::<String>(),
                    VARIABLES.join(", ")
                ),
            ));
        }
        rest = &after[end + 2..];
    }
    Ok(())
}

/// The command that signals completion: it writes [`SETUP_KEY`] = the VM id into the guest's
/// KVP exchange (guest-to-host items live under this registry key).
pub fn signal_command(vm_id: &str) -> String {
    format!(
        r#"reg.exe add "HKLM\SOFTWARE\Microsoft\Virtual Machine\Auto" /v {SETUP_KEY} /t REG_SZ /d {vm_id} /f"#
    )
}

/// Renders `template` with `inputs`.
///
/// # Errors
/// [`hcp_core::ErrorKind::InvalidSpec`] for an unknown placeholder or an unusable VM name.
pub fn render(template: &str, inputs: &Inputs<'_>) -> Result<String> {
    check_template("unattend_template", template)?;
    let mut commands: Vec<String> = inputs.first_logon_commands.to_vec();
    commands.push(signal_command(inputs.vm_id));
    let first_logon: String = commands
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "<SynchronousCommand wcm:action=\"add\"><Order>{}</Order><CommandLine>{}</CommandLine></SynchronousCommand>",
                i + 1,
                xml_escape(c)
            )
        })
        .collect();
    let join = match inputs.domain_join {
        None => String::new(),
        Some((domain, ou, user, password)) => {
            let (user_domain, user_name) = match user.expose().split_once('\\') {
                Some((d, u)) => (d.to_string(), u.to_string()),
                None => (domain.to_string(), user.expose().to_string()),
            };
            let ou = ou
                .map(|ou| format!("<MachineObjectOU>{}</MachineObjectOU>", xml_escape(ou)))
                .unwrap_or_default();
            format!(
                "<component name=\"Microsoft-Windows-UnattendedJoin\" processorArchitecture=\"amd64\" publicKeyToken=\"31bf3856ad364e35\" language=\"neutral\" versionScope=\"nonSxS\"><Identification><Credentials><Domain>{}</Domain><Username>{}</Username><Password>{}</Password></Credentials><JoinDomain>{}</JoinDomain>{ou}</Identification></component>",
                xml_escape(&user_domain),
                xml_escape(&user_name),
                xml_escape(password.expose()),
                xml_escape(domain)
            )
        }
    };
    let computer = computer_name(inputs.vm_name)?;
    let mut out = String::with_capacity(template.len() + 1024);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").unwrap_or(after.len());
        let value = match after[..end].trim() {
            "computer_name" => xml_escape(&computer),
            "time_zone" => xml_escape(inputs.time_zone),
            "locale" => xml_escape(inputs.locale),
            "admin_password" => xml_escape(inputs.admin_password.expose()),
            "domain_join" => join.clone(),
            "first_logon_commands" => first_logon.clone(),
            _ => xml_escape(inputs.vm_id),
        };
        out.push_str(&value);
        rest = after.get(end + 2..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_blocks_rendered() {
        let pw = SecretString::new("p<&>\"'w");
        let user = SecretString::new("CORP\\svc-join");
        let jpw = SecretString::new("j0in&pw");
        let cmds = vec!["cmd /c echo <hi>".to_string()];
        let inputs = Inputs {
            vm_name: "web_server-01.prod",
            vm_id: "vm-123",
            time_zone: "W. Europe Standard Time",
            locale: "de-DE",
            admin_password: &pw,
            domain_join: Some(("corp.example.com", Some("OU=VMs,DC=corp"), &user, &jpw)),
            first_logon_commands: &cmds,
        };
        let out = render(
            "<n>{{computer_name}}</n><t>{{ time_zone }}</t><l>{{locale}}</l><p>{{admin_password}}</p>{{domain_join}}<c>{{first_logon_commands}}</c>",
            &inputs,
        )
        .unwrap();
        assert!(out.starts_with("<n>webserver-01pro</n>"), "{out}");
        assert!(out.contains("<t>W. Europe Standard Time</t><l>de-DE</l>"));
        assert!(out.contains("<p>p&lt;&amp;&gt;&quot;&apos;w</p>"));
        assert!(out.contains("<Domain>CORP</Domain><Username>svc-join</Username><Password>j0in&amp;pw</Password></Credentials><JoinDomain>corp.example.com</JoinDomain><MachineObjectOU>OU=VMs,DC=corp</MachineObjectOU>"));
        assert!(out.contains("<Order>1</Order><CommandLine>cmd /c echo &lt;hi&gt;</CommandLine>"));
        assert!(out.contains("<Order>2</Order><CommandLine>reg.exe add &quot;HKLM\\SOFTWARE\\Microsoft\\Virtual Machine\\Auto&quot; /v HcpSetupComplete /t REG_SZ /d vm-123 /f</CommandLine>"));
    }

    #[test]
    fn unknown_placeholders_and_unusable_names_are_refused() {
        let e = check_template("t", "<x>{{password}}</x>").unwrap_err();
        assert!(
            e.message().contains("unknown variable `{{password}}`"),
            "{e}"
        );
        assert!(check_template("t", "<x>{{locale</x>").is_err());
        assert!(computer_name("1234").is_err());
        assert!(computer_name("___").is_err());
        assert_eq!(
            computer_name("a-very-long-windows-name").unwrap(),
            "a-very-long-win"
        );
    }
}
