//! `GET /api/hcp/tenant/v1/me`: who the caller is and which projects they may open, for the web
//! UI's header and project picker (and any client that wants to know).

use poem::Request;
use poem_openapi::{Object, OpenApi};
use serde::Serialize;

use super::security::ApiAuth;
use super::{ApiTags, State};
use crate::auth::{self, Projects, Via};
use crate::error::ApiResult;
use crate::json::JsonBody;

/// The caller as the service sees them.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct MeDto {
    /// The token's subject (`anonymous` in development mode).
    pub subject: String,
    /// The token's roles (empty in development mode).
    pub roles: Vec<String>,
    /// True for operators: every project, and the ops API.
    pub operator: bool,
    /// True when the caller may use the tenant API.
    pub tenant: bool,
    /// True when authentication is off (development mode on loopback): every request acts as
    /// the development principal.
    pub development: bool,
    /// The projects the caller may open, sorted: their own that are configured, or every
    /// configured project for operators and in development mode.
    pub projects: Vec<String>,
    /// True when the caller may open any valid project id, not only those listed (no projects
    /// are configured, and the caller is an operator or in development mode).
    pub any_project: bool,
    /// When the caller's token expires (seconds since the Unix epoch); absent in development
    /// mode.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// The caller's own route of the tenant API.
pub(crate) struct MeApi {
    pub(crate) state: State,
}

#[OpenApi(prefix_path = "/api/hcp/tenant/v1", tag = "ApiTags::Tenant")]
impl MeApi {
    /// Who am I
    ///
    /// The caller's subject, roles and the projects they may open (the projects listed are
    /// those configured that the caller is a member of; every configured one for operators).
    #[oai(path = "/me", method = "get", operation_id = "me")]
    async fn me(&self, _auth: ApiAuth, req: &Request) -> ApiResult<JsonBody<MeDto>> {
        let caller = auth::caller(req);
        let configured = self.state.engine.projects();
        let (projects, any_project) = match &caller.projects {
            Projects::All => (configured.clone(), configured.is_empty()),
            Projects::Only(mine) => (
                if configured.is_empty() {
                    mine.iter().cloned().collect()
                } else {
                    configured
                        .iter()
                        .filter(|p| mine.contains(p.as_str()))
                        .cloned()
                        .collect()
                },
                false,
            ),
        };
        Ok(JsonBody::new(&MeDto {
            subject: caller.subject.clone(),
            roles: caller.roles.iter().cloned().collect(),
            operator: caller.operator,
            tenant: caller.tenant || caller.operator,
            development: caller.via == Via::Development,
            projects,
            any_project,
            expires_at: caller.expires_at,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::assert_same_json;

    #[test]
    fn me_serialises_as_its_to_json() {
        for expires_at in [None, Some(1_800_000_000), Some(i64::MIN)] {
            let me = MeDto {
                subject: "alice \"a\"".into(),
                roles: vec!["hcp-tenant".into(), "hcp-operator".into()],
                operator: true,
                tenant: false,
                development: expires_at.is_none(),
                projects: vec!["demo".into()],
                any_project: false,
                expires_at,
            };
            assert_same_json("MeDto", &me, &me);
        }
    }
}
