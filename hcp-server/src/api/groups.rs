//! Server groups of the tenant API: a project's named sets of VMs that placement keeps apart
//! (anti-affinity) or together (affinity). Like every tenant route they act in one project; a
//! group shows its member VM ids, never the hosts they run on.

use hcp_core::{GroupPolicy, GroupStrength, NewServerGroup, ServerGroup, ServerGroupId};
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use serde::{Deserialize, Serialize};

use super::security::ApiAuth;
use super::{ApiTags, State, TENANT_PREFIX, tenant_context};
use crate::dto::StrictDto;
use crate::error::ApiResult;
use crate::json::JsonBody;
use crate::limits::StrictJson;

/// Whether a group's members share a host or avoid sharing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Deserialize, Serialize)]
pub(crate) enum GroupPolicyDto {
    /// Members run on the same host.
    #[oai(rename = "affinity")]
    #[serde(rename = "affinity")]
    Affinity,
    /// Members run on different hosts.
    #[oai(rename = "anti-affinity")]
    #[serde(rename = "anti-affinity")]
    AntiAffinity,
}

impl From<GroupPolicyDto> for GroupPolicy {
    fn from(p: GroupPolicyDto) -> Self {
        match p {
            GroupPolicyDto::Affinity => GroupPolicy::Affinity,
            GroupPolicyDto::AntiAffinity => GroupPolicy::AntiAffinity,
        }
    }
}

impl From<GroupPolicy> for GroupPolicyDto {
    fn from(p: GroupPolicy) -> Self {
        match p {
            GroupPolicy::Affinity => GroupPolicyDto::Affinity,
            GroupPolicy::AntiAffinity => GroupPolicyDto::AntiAffinity,
        }
    }
}

/// Whether placement must keep a group's policy or only prefers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Deserialize, Serialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub(crate) enum GroupStrengthDto {
    /// Placement prefers hosts that keep the policy and uses others when none has room.
    Soft,
    /// Placement never breaks the policy: a create it cannot meet is `409 SERVER_GROUP_POLICY`.
    Hard,
}

impl From<GroupStrengthDto> for GroupStrength {
    fn from(s: GroupStrengthDto) -> Self {
        match s {
            GroupStrengthDto::Soft => GroupStrength::Soft,
            GroupStrengthDto::Hard => GroupStrength::Hard,
        }
    }
}

impl From<GroupStrength> for GroupStrengthDto {
    fn from(s: GroupStrength) -> Self {
        match s {
            GroupStrength::Soft => GroupStrengthDto::Soft,
            GroupStrength::Hard => GroupStrengthDto::Hard,
        }
    }
}

/// Creates a server group: the body of `POST .../projects/{projectId}/server-groups`.
#[derive(Debug, Clone, PartialEq, Eq, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub(crate) struct CreateServerGroupRequest {
    /// The group's name, unique in the project: 1-63 lowercase letters, digits and `-`,
    /// starting with a letter.
    #[oai(validator(min_length = 1, max_length = 63))]
    pub(crate) name: String,
    /// `anti-affinity` (members on different hosts) or `affinity` (members on one host).
    pub(crate) policy: GroupPolicyDto,
    /// `hard` (the default: never broken; a create that cannot keep it is refused) or `soft`
    /// (preferred while hosts have room).
    #[serde(default)]
    pub(crate) strength: Option<GroupStrengthDto>,
}

impl StrictDto for CreateServerGroupRequest {
    const SERVER_OWNED: &'static [&'static str] =
        &["id", "project", "members", "created_at", "generation"];
}

// Answered with `JsonBody`: its serde form is its `ToJSON` form (checked in the tests).
/// A server group as a tenant sees it.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub(crate) struct ServerGroupDto {
    /// HCP's id (`sg-…`); pass it as `server_group` when creating a VM.
    pub(crate) id: String,
    /// The owning project.
    pub(crate) project: String,
    /// The name.
    pub(crate) name: String,
    /// `anti-affinity` or `affinity`.
    pub(crate) policy: GroupPolicyDto,
    /// `hard` or `soft`.
    pub(crate) strength: GroupStrengthDto,
    /// The member VMs' ids, ordered by id (never the hosts they run on).
    pub(crate) members: Vec<String>,
    /// When HCP created it.
    #[serde(serialize_with = "crate::json::rfc3339")]
    pub(crate) created_at: chrono::DateTime<chrono::Utc>,
}

impl From<ServerGroup> for ServerGroupDto {
    fn from(g: ServerGroup) -> Self {
        ServerGroupDto {
            id: g.id.to_string(),
            project: g.project.to_string(),
            name: g.name,
            policy: g.policy.into(),
            strength: g.strength.into(),
            members: g.members.into_iter().map(|m| m.to_string()).collect(),
            created_at: g.created_at,
        }
    }
}

/// One page of a project's server groups.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub(crate) struct ServerGroupPage {
    /// The groups, ordered by id.
    pub(crate) items: Vec<ServerGroupDto>,
    /// The cursor of the next page, when there is one.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) next: Option<String>,
}

/// The answer of a create.
#[derive(Debug, ApiResponse)]
pub(crate) enum ServerGroupCreated {
    /// Created; `Location` is the group's URL.
    #[oai(status = 201)]
    Created(JsonBody<ServerGroupDto>, #[oai(header = "Location")] String),
}

/// The answer of a delete.
#[derive(Debug, ApiResponse)]
pub(crate) enum ServerGroupDeleted {
    /// Deleted.
    #[oai(status = 204)]
    Deleted,
}

pub(crate) struct ServerGroupsApi {
    pub(crate) state: State,
}

#[OpenApi(prefix_path = "/api/hcp/tenant/v1", tag = "ApiTags::Tenant")]
impl ServerGroupsApi {
    /// Create a server group
    ///
    /// Creates an empty group with a placement policy: `anti-affinity` keeps its VMs on
    /// different hosts, `affinity` on one host; `hard` (the default) never breaks the policy,
    /// `soft` prefers it while hosts have room. VMs join the group when they are created with
    /// `server_group` set to its id; a create that a hard policy rules out is refused before
    /// any job with `409 SERVER_GROUP_POLICY` naming the group and its policy. A name taken in
    /// the project is `409 CONFLICT`; a policy or strength outside the allowed values is `400
    /// INVALID_SPEC` naming the field.
    #[oai(
        path = "/projects/:projectId/server-groups",
        method = "post",
        operation_id = "createServerGroup"
    )]
    async fn create_server_group(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "projectId")] project_id: Path<String>,
        body: StrictJson<CreateServerGroupRequest>,
    ) -> ApiResult<ServerGroupCreated> {
        let ctx = tenant_context(&self.state.engine, req, &project_id, None)?;
        let b = body.0;
        let group = self
            .state
            .engine
            .create_server_group(
                &ctx,
                NewServerGroup {
                    name: b.name,
                    policy: b.policy.into(),
                    strength: b.strength.map_or(GroupStrength::Hard, Into::into),
                },
            )
            .await?;
        let location = format!(
            "{TENANT_PREFIX}/projects/{}/server-groups/{}",
            ctx.project, group.id
        );
        Ok(ServerGroupCreated::Created(
            JsonBody::new(&ServerGroupDto::from(group)),
            location,
        ))
    }

    /// List a project's server groups
    ///
    /// Ordered by id, each with its member VM ids. Pass the previous page's `next` as
    /// `cursor`.
    #[oai(
        path = "/projects/:projectId/server-groups",
        method = "get",
        operation_id = "listServerGroups"
    )]
    async fn list_server_groups(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "projectId")] project_id: Path<String>,
        /// Page size (default 100, clamped to the server's maximum).
        limit: Query<Option<u32>>,
        /// The `next` cursor of the previous page.
        cursor: Query<Option<String>>,
    ) -> ApiResult<JsonBody<ServerGroupPage>> {
        let ctx = tenant_context(&self.state.engine, req, &project_id, None)?;
        let page = self
            .state
            .engine
            .list_server_groups(&ctx.scope(), &self.state.pages.request(limit.0, cursor.0)?)
            .await?;
        Ok(JsonBody::new(&ServerGroupPage {
            items: page.items.into_iter().map(Into::into).collect(),
            next: page.next,
        }))
    }

    /// Get a server group
    ///
    /// The group with its member VM ids. Another project's group is `404`.
    #[oai(
        path = "/projects/:projectId/server-groups/:groupId",
        method = "get",
        operation_id = "getServerGroup"
    )]
    async fn get_server_group(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "projectId")] project_id: Path<String>,
        #[oai(name = "groupId")] group_id: Path<String>,
    ) -> ApiResult<JsonBody<ServerGroupDto>> {
        let ctx = tenant_context(&self.state.engine, req, &project_id, None)?;
        let group = self
            .state
            .engine
            .get_server_group(&ctx.scope(), &ServerGroupId::new(group_id.0))
            .await?;
        Ok(JsonBody::new(&ServerGroupDto::from(group)))
    }

    /// Delete a server group
    ///
    /// Deletes an empty group (`204`). A group that still has VMs is `409
    /// SERVER_GROUP_NOT_EMPTY`: delete its VMs first (a deleted VM leaves its group).
    #[oai(
        path = "/projects/:projectId/server-groups/:groupId",
        method = "delete",
        operation_id = "deleteServerGroup"
    )]
    async fn delete_server_group(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "projectId")] project_id: Path<String>,
        #[oai(name = "groupId")] group_id: Path<String>,
    ) -> ApiResult<ServerGroupDeleted> {
        let ctx = tenant_context(&self.state.engine, req, &project_id, None)?;
        self.state
            .engine
            .delete_server_group(&ctx, &ServerGroupId::new(group_id.0))
            .await?;
        Ok(ServerGroupDeleted::Deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(members: usize, policy: GroupPolicy, strength: GroupStrength) -> ServerGroupDto {
        ServerGroupDto::from(ServerGroup {
            id: ServerGroupId::new("sg-1"),
            project: hcp_core::ProjectId::new("demo"),
            name: "web".to_string(),
            policy,
            strength,
            members: (0..members)
                .map(|i| hcp_core::VmId::new(format!("vm-{i}")))
                .collect(),
            created_at: chrono::DateTime::from_timestamp(1_780_000_000, 123_456_789)
                .expect("a time"),
            generation: 3,
        })
    }

    #[test]
    fn group_responses_serialise_as_their_to_json() {
        let groups = [
            group(0, GroupPolicy::Affinity, GroupStrength::Hard),
            group(2, GroupPolicy::AntiAffinity, GroupStrength::Soft),
        ];
        for g in &groups {
            crate::json::assert_same_json("ServerGroup", g, g);
        }
        for next in [None, Some("sg-1".to_string())] {
            let page = ServerGroupPage {
                items: groups.to_vec(),
                next,
            };
            crate::json::assert_same_json("ServerGroupPage", &page, &page);
        }
        let empty = ServerGroupPage {
            items: Vec::new(),
            next: None,
        };
        crate::json::assert_same_json("ServerGroupPage", &empty, &empty);
    }
}
