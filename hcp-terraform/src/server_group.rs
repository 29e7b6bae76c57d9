//! The `hcp_server_group` resource: a project's server group (anti-affinity or affinity, hard
//! or soft), which `hcp_vm.server_group` names.
//!
//! # Behavior
//! - Create makes the group; every input (`project`, `name`, `policy`, `strength`) forces a new
//!   group when it changes, since HCP has no route that changes a group in place.
//! - Refresh reads the group and its `members` (the ids of the VMs created into it); a group
//!   deleted out of band leaves the state.
//! - Destroy deletes the group. HCP refuses while VMs are in it (`SERVER_GROUP_NOT_EMPTY`);
//!   Terraform destroys the VMs that name the group first, as they depend on it.
//! - Import takes `PROJECT/GROUP_ID`.

use async_trait::async_trait;
use hcp_core::{Error, ErrorKind, GroupPolicy, GroupStrength, ServerGroup, ServerGroupId};
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeConstraint, AttributeType, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};

use crate::common::{attr, schema};
use crate::diag;
use crate::provider::{Connection, Shared};

/// The state (and plan, and configuration) of one `hcp_server_group`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupState {
    /// HCP's group id (computed).
    pub id: Value<String>,
    /// The project; the provider's when unset.
    pub project: Value<String>,
    /// The group name, unique in its project.
    pub name: Value<String>,
    /// `anti-affinity` or `affinity`.
    pub policy: Value<String>,
    /// `hard` (the default) or `soft`.
    pub strength: Value<String>,
    /// The member VM ids (computed).
    pub members: Value<Vec<Value<String>>>,
}

/// The attributes whose change forces a new group (all the inputs).
pub const REPLACE_ATTRIBUTES: &[&str] = &["project", "name", "policy", "strength"];

impl GroupState {
    fn observe(&mut self, g: &ServerGroup) {
        self.id = Value::Value(g.id.to_string());
        self.project = Value::Value(g.project.to_string());
        self.name = Value::Value(g.name.clone());
        self.policy = Value::Value(g.policy.as_str().to_string());
        self.strength = Value::Value(g.strength.as_str().to_string());
        self.members = Value::Value(
            g.members
                .iter()
                .map(|m| Value::Value(m.to_string()))
                .collect(),
        );
    }

    fn changed(&self, other: &GroupState, name: &str) -> bool {
        match name {
            "project" => self.project != other.project,
            "name" => self.name != other.name,
            "policy" => self.policy != other.policy,
            "strength" => self.strength != other.strength,
            _ => false,
        }
    }
}

/// Checks the inputs that can be checked without HCP, as diagnostics on the attributes.
fn validate_static(diags: &mut Diagnostics, config: &GroupState) {
    let mut check = |attr: &'static str, r: hcp_core::Result<()>| {
        if let Err(e) = r {
            diag::report(diags, &e, &AttributePath::new(attr));
        }
    };
    if let Value::Value(n) = &config.name {
        check("name", hcp_core::validate_dns_label("name", n));
    }
    if let Value::Value(p) = &config.policy {
        check("policy", p.parse::<GroupPolicy>().map(|_| ()));
    }
    if let Value::Value(s) = &config.strength {
        check("strength", s.parse::<GroupStrength>().map(|_| ()));
    }
}

/// The `hcp_server_group` resource.
#[derive(Debug, Clone)]
pub struct ServerGroupResource {
    shared: Shared,
}

impl ServerGroupResource {
    /// Creates the resource over the provider's connection.
    pub fn new(shared: Shared) -> Self {
        ServerGroupResource { shared }
    }

    fn project_of(
        &self,
        diags: &mut Diagnostics,
        conn: &Connection,
        state: &GroupState,
    ) -> Option<String> {
        crate::common::project_of(diags, conn, &state.project)
    }

    async fn fetch(
        conn: &Connection,
        project: &str,
        id: &str,
    ) -> hcp_core::Result<Option<ServerGroup>> {
        match conn
            .client
            .get_server_group(project, &ServerGroupId::new(id))
            .await
        {
            Ok(g) => Ok(Some(g)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn create_group(
        &self,
        diags: &mut Diagnostics,
        planned: GroupState,
    ) -> Option<GroupState> {
        let conn = self.shared.get(diags)?;
        let project = self.project_of(diags, &conn, &planned)?;
        let parsed = (|| -> hcp_core::Result<(String, GroupPolicy, GroupStrength)> {
            let name = planned
                .name
                .as_ref_option()
                .cloned()
                .ok_or_else(|| Error::invalid("name", "is required"))?;
            let policy = planned
                .policy
                .as_ref_option()
                .ok_or_else(|| Error::invalid("policy", "is required"))?
                .parse()?;
            let strength = match planned.strength.as_ref_option() {
                Some(s) => s.parse()?,
                None => GroupStrength::Hard,
            };
            Ok((name, policy, strength))
        })();
        let (name, policy, strength) = match parsed {
            Ok(p) => p,
            Err(e) => {
                let path = e
                    .field()
                    .and_then(|f| REPLACE_ATTRIBUTES.iter().find(|a| **a == f))
                    .map_or_else(AttributePath::root, |a| AttributePath::new(*a));
                diag::report(diags, &e, &path);
                return None;
            }
        };
        match conn
            .client
            .create_server_group(&project, &name, policy, strength)
            .await
        {
            Ok(g) => {
                let mut state = planned;
                state.observe(&g);
                Some(state)
            }
            Err(e) => {
                let path = e
                    .field()
                    .and_then(|f| REPLACE_ATTRIBUTES.iter().find(|a| **a == f))
                    .map_or_else(AttributePath::root, |a| AttributePath::new(*a));
                diag::report(diags, &e, &path);
                None
            }
        }
    }
}

#[async_trait]
impl Resource for ServerGroupResource {
    type State<'a> = Value<GroupState>;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        use AttributeConstraint::{Computed, OptionalComputed, Required};
        use AttributeType::{List, String as Str};
        let attrs = vec![
            ("id", attr(Str, "HCP's server group id (`sg-…`).", Computed)),
            (
                "project",
                attr(
                    Str,
                    "The project; the provider's `project` when unset. Changing it forces a new group.",
                    OptionalComputed,
                ),
            ),
            (
                "name",
                attr(
                    Str,
                    "The group name, unique in its project: 1-63 characters of a-z, 0-9 and '-', starting with a letter. Changing it forces a new group.",
                    Required,
                ),
            ),
            (
                "policy",
                attr(
                    Str,
                    "`anti-affinity` (members on different hosts) or `affinity` (members on one host). Changing it forces a new group.",
                    Required,
                ),
            ),
            (
                "strength",
                attr(
                    Str,
                    "`hard` (default: a create or move that would break the policy is refused) or `soft` (placement prefers hosts that keep it). Changing it forces a new group.",
                    OptionalComputed,
                ),
            ),
            (
                "members",
                attr(
                    List(Box::new(Str)),
                    "The ids of the VMs created into the group.",
                    Computed,
                ),
            ),
        ];
        Some(schema(
            "A server group: VMs created into it (`hcp_vm.server_group`) are placed apart (anti-affinity) or together (affinity). Every change forces a new group; HCP refuses to delete a group that still has VMs.",
            attrs,
        ))
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Value<GroupState>) -> Option<()> {
        if let Value::Value(config) = &config {
            validate_static(diags, config);
        }
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: Value<GroupState>,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(Value<GroupState>, ValueEmpty)> {
        let Value::Value(state) = state else {
            return Some((Value::Null, private_state));
        };
        let conn = self.shared.get(diags)?;
        let (Value::Value(project), Value::Value(id)) = (&state.project, &state.id) else {
            return Some((Value::Null, private_state));
        };
        match Self::fetch(&conn, project, id).await {
            Ok(Some(g)) => {
                let mut next = state.clone();
                next.observe(&g);
                Some((Value::Value(next), private_state))
            }
            Ok(None) => Some((Value::Null, private_state)),
            Err(e) => {
                diag::report(diags, &e, &AttributePath::root());
                Some((Value::Value(state), private_state))
            }
        }
    }

    async fn plan_create<'a>(
        &self,
        diags: &mut Diagnostics,
        proposed: Value<GroupState>,
        config: Value<GroupState>,
        _meta: ValueEmpty,
    ) -> Option<(Value<GroupState>, ValueEmpty)> {
        let config = config.unwrap_or_default();
        validate_static(diags, &config);
        let conn = self.shared.get(diags)?;
        let mut planned = proposed.unwrap_or_default();
        if planned.project.is_null() {
            planned.project = Value::Value(self.project_of(diags, &conn, &config)?);
        }
        if planned.strength.is_null() {
            planned.strength = Value::Value(GroupStrength::Hard.as_str().to_string());
        }
        planned.id = Value::Unknown;
        planned.members = Value::Unknown;
        Some((Value::Value(planned), ValueEmpty::default()))
    }

    async fn plan_update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Value<GroupState>,
        proposed: Value<GroupState>,
        config: Value<GroupState>,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(Value<GroupState>, ValueEmpty, Vec<AttributePath>)> {
        let (prior, config) = (prior.unwrap_or_default(), config.unwrap_or_default());
        validate_static(diags, &config);
        let mut planned = proposed.unwrap_or_default();
        if config.strength.is_null() {
            planned.strength = Value::Value(GroupStrength::Hard.as_str().to_string());
        }
        if config.project.is_null() {
            planned.project = prior.project.clone();
        }
        let replace: Vec<AttributePath> = REPLACE_ATTRIBUTES
            .iter()
            .filter(|a| prior.changed(&planned, a))
            .map(|a| AttributePath::new(*a))
            .collect();
        if !replace.is_empty() {
            planned.id = Value::Unknown;
            planned.members = Value::Unknown;
        }
        Some((Value::Value(planned), private_state, replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: Value<GroupState>,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<ValueEmpty> {
        Some(private_state)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: Value<GroupState>,
        _config: Value<GroupState>,
        _private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(Value<GroupState>, ValueEmpty)> {
        Some(
            match self.create_group(diags, planned.unwrap_or_default()).await {
                Some(s) => (Value::Value(s), ValueEmpty::default()),
                None => (Value::Null, ValueEmpty::default()),
            },
        )
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Value<GroupState>,
        _planned: Value<GroupState>,
        _config: Value<GroupState>,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(Value<GroupState>, ValueEmpty)> {
        // Every input forces a new group, so only a refresh of the computed members lands here.
        diag::root_error(
            diags,
            "A server group cannot change in place",
            "HCP has no route that changes a server group; every change replaces it.".to_string(),
        );
        Some((prior, private_state))
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Value<GroupState>,
        _private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<()> {
        let Value::Value(prior) = prior else {
            return Some(());
        };
        let conn = self.shared.get(diags)?;
        let project = self.project_of(diags, &conn, &prior)?;
        let Value::Value(id) = &prior.id else {
            return Some(());
        };
        match conn
            .client
            .delete_server_group(&project, &ServerGroupId::new(id.clone()))
            .await
        {
            Ok(()) => Some(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Some(()),
            Err(e) => {
                diag::report(diags, &e, &AttributePath::root());
                None
            }
        }
    }

    async fn import<'a>(
        &self,
        diags: &mut Diagnostics,
        id: String,
    ) -> Option<(Value<GroupState>, ValueEmpty)> {
        let conn = self.shared.get(diags)?;
        let Some((project, group)) = id
            .split_once('/')
            .filter(|(p, g)| !p.is_empty() && !g.is_empty() && !g.contains('/'))
        else {
            diag::root_error(
                diags,
                "Invalid import id",
                format!(
                    "`{}` is not PROJECT/GROUP_ID (e.g. team-a/sg-0190...)",
                    hcp_core::error::echo(&id)
                ),
            );
            return None;
        };
        match Self::fetch(&conn, project, group).await {
            Ok(Some(g)) => {
                let mut state = GroupState::default();
                state.observe(&g);
                Some((Value::Value(state), ValueEmpty::default()))
            }
            Ok(None) => {
                diag::root_error(
                    diags,
                    "Cannot import a server group that does not exist",
                    format!(
                        "HCP has no server group `{}` in project `{project}`",
                        hcp_core::error::echo(group)
                    ),
                );
                None
            }
            Err(e) => {
                diag::report(diags, &e, &AttributePath::root());
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_forces_a_new_group() {
        let a = GroupState {
            project: Value::Value("demo".into()),
            name: Value::Value("web".into()),
            policy: Value::Value("anti-affinity".into()),
            strength: Value::Value("hard".into()),
            ..Default::default()
        };
        for attr in REPLACE_ATTRIBUTES {
            let mut b = a.clone();
            match *attr {
                "project" => b.project = Value::Value("other".into()),
                "name" => b.name = Value::Value("db".into()),
                "policy" => b.policy = Value::Value("affinity".into()),
                _ => b.strength = Value::Value("soft".into()),
            }
            assert!(a.changed(&b, attr), "{attr}");
        }
        let mut c = a.clone();
        c.members = Value::Value(vec![Value::Value("vm-1".into())]);
        assert!(REPLACE_ATTRIBUTES.iter().all(|n| !a.changed(&c, n)));
    }
}
