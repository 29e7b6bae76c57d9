//! Server groups: a project's named sets of VMs that placement keeps together (affinity) or
//! apart (anti-affinity), as a hard rule or a soft preference. Plain data and validation, no I/O.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, ErrorKind, ProjectId, Result, ServerGroupId, VmId, validate_dns_label};

/// Code of the error returned when a hard server-group policy cannot be met (the kind is
/// [`ErrorKind::Conflict`]); the message names the group and its policy.
pub const CODE_SERVER_GROUP_POLICY: &str = "SERVER_GROUP_POLICY";
/// Code of the error returned when a server group that still has members is deleted (the kind is
/// [`ErrorKind::Conflict`]).
pub const CODE_SERVER_GROUP_NOT_EMPTY: &str = "SERVER_GROUP_NOT_EMPTY";

/// Whether a group's members share a host or avoid sharing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GroupPolicy {
    /// Members run on the same host.
    #[serde(rename = "affinity")]
    Affinity,
    /// Members run on different hosts.
    #[serde(rename = "anti-affinity")]
    AntiAffinity,
}

impl GroupPolicy {
    /// Returns the wire name (`affinity`, `anti-affinity`).
    pub fn as_str(self) -> &'static str {
        match self {
            GroupPolicy::Affinity => "affinity",
            GroupPolicy::AntiAffinity => "anti-affinity",
        }
    }
}

impl fmt::Display for GroupPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for GroupPolicy {
    type Err = Error;

    /// Parses `affinity` or `anti-affinity`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming the field `policy`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "affinity" => Ok(GroupPolicy::Affinity),
            "anti-affinity" => Ok(GroupPolicy::AntiAffinity),
            other => Err(Error::invalid(
                "policy",
                format!(
                    "is `{}`; allowed: affinity, anti-affinity",
                    crate::error::echo(other)
                ),
            )),
        }
    }
}

/// Whether placement must keep a group's policy or only prefers to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupStrength {
    /// Placement prefers hosts that keep the policy and uses others when none has room.
    Soft,
    /// Placement never breaks the policy; a create it cannot meet is refused before any job.
    #[default]
    Hard,
}

impl GroupStrength {
    /// Returns the wire name (`soft`, `hard`).
    pub fn as_str(self) -> &'static str {
        match self {
            GroupStrength::Soft => "soft",
            GroupStrength::Hard => "hard",
        }
    }
}

impl fmt::Display for GroupStrength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for GroupStrength {
    type Err = Error;

    /// Parses `soft` or `hard`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming the field `strength`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "soft" => Ok(GroupStrength::Soft),
            "hard" => Ok(GroupStrength::Hard),
            other => Err(Error::invalid(
                "strength",
                format!("is `{}`; allowed: soft, hard", crate::error::echo(other)),
            )),
        }
    }
}

/// A server group: a named set of one project's VMs placed by one policy.
///
/// Members are the VMs created into the group (`VmSpec::server_group`); a VM leaves its group
/// when its record is removed (the VM is deleted). Tenants see the member VM ids, never hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerGroup {
    /// HCP's group id (`sg-…`).
    pub id: ServerGroupId,
    /// The owning project.
    pub project: ProjectId,
    /// The group name, unique within its project: 1–63 characters of `[a-z0-9-]`, starting with
    /// a letter.
    pub name: String,
    /// Keep members together or apart.
    pub policy: GroupPolicy,
    /// Whether the policy is a rule or a preference.
    pub strength: GroupStrength,
    /// The member VMs, ordered by id (filled in by the store on every read; ignored on writes).
    #[serde(default)]
    pub members: Vec<VmId>,
    /// When HCP created it.
    pub created_at: DateTime<Utc>,
    /// The compare-and-swap generation (1 once stored; absent from tenant views).
    #[serde(default)]
    pub generation: u64,
}

impl ServerGroup {
    /// Starts a group of `project` with a new id, no members and generation 0.
    pub fn new(
        project: ProjectId,
        name: impl Into<String>,
        policy: GroupPolicy,
        strength: GroupStrength,
    ) -> Self {
        ServerGroup {
            id: ServerGroupId::generate(),
            project,
            name: name.into(),
            policy,
            strength,
            members: Vec::new(),
            created_at: Utc::now(),
            generation: 0,
        }
    }

    /// Checks the group's own fields.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming `name` or `project`.
    pub fn validate(&self) -> Result<()> {
        self.project.validate()?;
        validate_dns_label("name", &self.name)
    }

    /// Returns true when placement must keep the policy.
    pub fn is_hard(&self) -> bool {
        self.strength == GroupStrength::Hard
    }

    /// Describes the policy for people (`hard anti-affinity`).
    pub fn describe(&self) -> String {
        format!("{} {}", self.strength, self.policy)
    }

    /// Checks that a new member placed on `target` keeps a hard policy, given the targets its
    /// current members are bound to (one `(provider, target)` pair per member). A soft policy
    /// admits any target.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] with code [`CODE_SERVER_GROUP_POLICY`] and field `server_group`,
    /// naming the group and its policy, never a host.
    pub fn admits(&self, members: &[(String, String)], target: (&str, &str)) -> Result<()> {
        if !self.is_hard() {
            return Ok(());
        }
        let same = |m: &(String, String)| m.0 == target.0 && m.1 == target.1;
        let broken = match self.policy {
            GroupPolicy::AntiAffinity => members.iter().any(same),
            GroupPolicy::Affinity => members.iter().any(|m| !same(m)),
        };
        if broken {
            return Err(self.policy_refusal(match self.policy {
                GroupPolicy::AntiAffinity => "another member already runs on the chosen host",
                GroupPolicy::Affinity => "the members run on another host",
            }));
        }
        Ok(())
    }

    /// Returns the refusal of a create that this group's hard policy rules out, with `why`.
    pub fn policy_refusal(&self, why: &str) -> Error {
        Error::new(
            ErrorKind::Conflict,
            format!(
                "server group `{}` ({}) cannot take another VM: {why}",
                self.name,
                self.describe()
            ),
        )
        .with_code(CODE_SERVER_GROUP_POLICY)
        .with_field("server_group")
        .with_context("server_group", self.id.as_str())
        .with_context("policy", self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(policy: GroupPolicy, strength: GroupStrength) -> ServerGroup {
        ServerGroup::new(ProjectId::new("demo"), "web", policy, strength)
    }

    fn on(host: &str) -> (String, String) {
        ("sim".to_string(), host.to_string())
    }

    #[test]
    fn policies_parse_and_name_the_field() {
        assert_eq!(
            "anti-affinity".parse::<GroupPolicy>().unwrap(),
            GroupPolicy::AntiAffinity
        );
        let e = "anti_affinity".parse::<GroupPolicy>().unwrap_err();
        assert_eq!(e.field(), Some("policy"));
        let e = "medium".parse::<GroupStrength>().unwrap_err();
        assert_eq!(e.field(), Some("strength"));
        assert_eq!(
            serde_json::to_string(&GroupPolicy::AntiAffinity).unwrap(),
            "\"anti-affinity\""
        );
    }

    #[test]
    fn hard_policies_admit_only_what_they_allow() {
        let anti = group(GroupPolicy::AntiAffinity, GroupStrength::Hard);
        anti.admits(&[on("a")], ("sim", "b")).unwrap();
        let e = anti.admits(&[on("a")], ("sim", "a")).unwrap_err();
        assert_eq!(e.code(), CODE_SERVER_GROUP_POLICY);
        assert!(e.message().contains("`web` (hard anti-affinity)"), "{e}");
        assert!(!e.message().contains("sim"), "no host or provider: {e}");

        let aff = group(GroupPolicy::Affinity, GroupStrength::Hard);
        aff.admits(&[], ("sim", "b")).unwrap();
        aff.admits(&[on("a")], ("sim", "a")).unwrap();
        assert!(aff.admits(&[on("a")], ("sim", "b")).is_err());

        let soft = group(GroupPolicy::AntiAffinity, GroupStrength::Soft);
        soft.admits(&[on("a")], ("sim", "a")).unwrap();
    }
}
