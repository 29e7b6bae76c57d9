//! Server groups: create, read, list and delete a project's groups, and the group a create
//! joins, read for placement under the group's lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use super::inventory::GroupPlacement;
use super::{Engine, Inner, RequestContext, lock};
use crate::store::{Page, PageRequest, Scope, group_not_found};
use crate::{
    Error, EventKind, GroupPolicy, GroupStrength, JobAction, Result, ServerGroup, ServerGroupId,
    Vm, VmId, validate_dns_label,
};

/// The most members a server group holds; a create into a full group is refused.
pub const MAX_SERVER_GROUP_MEMBERS: usize = 1000;

/// One async lock per server group, so that creates into a group (and its deletion) are placed
/// one after another inside this process; the store checks the policy again in its transaction
/// for writers in other processes.
#[derive(Debug, Default)]
pub(crate) struct GroupLocks {
    locks: Mutex<HashMap<ServerGroupId, Arc<tokio::sync::Mutex<()>>>>,
}

impl GroupLocks {
    /// Waits for the lock of group `id`.
    pub(crate) async fn lock(&self, id: &ServerGroupId) -> OwnedMutexGuard<()> {
        let m = lock(&self.locks).entry(id.clone()).or_default().clone();
        m.lock_owned().await
    }

    /// Forgets the lock of a deleted group.
    fn forget(&self, id: &ServerGroupId) {
        lock(&self.locks).remove(id);
    }
}

/// Reads the group `id` (visible in `scope`) and where its members run.
///
/// # Errors
/// [`crate::ErrorKind::NotFound`] naming the field `server_group` when the group does not exist
/// in scope; [`crate::ErrorKind::Conflict`] with code [`crate::CODE_SERVER_GROUP_POLICY`] when it
/// already holds [`MAX_SERVER_GROUP_MEMBERS`] VMs.
pub(crate) async fn placement_of(
    inner: &Inner,
    scope: &Scope,
    id: &ServerGroupId,
) -> Result<GroupPlacement> {
    let group = inner
        .store
        .get_server_group(scope, id)
        .await?
        .ok_or_else(|| group_not_found(id))?;
    if group.members.len() >= MAX_SERVER_GROUP_MEMBERS {
        return Err(group.policy_refusal(&format!(
            "it already has {MAX_SERVER_GROUP_MEMBERS} members, the most a group holds"
        )));
    }
    members_where(inner, group, None).await
}

/// Reads the server group VM `vm` belongs to, if any, and where its other members run: the
/// placement a migration of `vm` must keep.
///
/// # Errors
/// The store's errors. A group that no longer exists is `None`.
pub(crate) async fn placement_for_move(inner: &Inner, vm: &Vm) -> Result<Option<GroupPlacement>> {
    let Some(id) = &vm.spec.server_group else {
        return Ok(None);
    };
    let Some(group) = inner.store.get_server_group(&Scope::All, id).await? else {
        return Ok(None);
    };
    Ok(Some(members_where(inner, group, Some(&vm.id)).await?))
}

/// Lists where `group`'s members (but `except`) run. For an anti-affinity group, a member that
/// is moving counts on the host it moves to as well, so that two moves (or a move and a create)
/// cannot land two members on one host while the first move runs.
async fn members_where(
    inner: &Inner,
    group: ServerGroup,
    except: Option<&VmId>,
) -> Result<GroupPlacement> {
    let mut members = Vec::with_capacity(group.members.len());
    let mut member_hosts = Vec::new();
    for m in group.members.iter().filter(|m| Some(*m) != except) {
        let Some(vm) = inner.store.get_vm(&Scope::All, m).await? else {
            continue;
        };
        if group.policy == GroupPolicy::AntiAffinity {
            for job in inner.store.unfinished_jobs_of(m).await? {
                if let JobAction::Migrate { target_host, .. } = &job.action {
                    members.push((vm.binding.provider.to_string(), target_host.clone()));
                }
            }
        }
        if let Some(m) = vm.binding.member_host {
            member_hosts.push((
                vm.binding.provider.to_string(),
                vm.binding.host.to_string(),
                m,
            ));
        }
        members.push((vm.binding.provider.to_string(), vm.binding.host.to_string()));
    }
    Ok(GroupPlacement {
        group,
        members,
        member_hosts,
    })
}

/// What a new server group is: its name, policy and strength.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewServerGroup {
    /// The name, unique in the project (a DNS label).
    pub name: String,
    /// Keep members together or apart.
    pub policy: GroupPolicy,
    /// A rule or a preference.
    pub strength: GroupStrength,
}

impl Engine {
    /// Creates a server group in the caller's project and records an audit event.
    ///
    /// # Behavior
    /// The group starts empty; VMs join it when they are created with
    /// `VmSpec::server_group` set to its id, and leave it when they are deleted.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidSpec`] naming `name` (or `project`);
    /// [`crate::ErrorKind::NotFound`] for an unknown project; [`crate::ErrorKind::Conflict`]
    /// naming `name` when the project already has a group of that name.
    pub async fn create_server_group(
        &self,
        ctx: &RequestContext,
        new: NewServerGroup,
    ) -> Result<ServerGroup> {
        self.check_project(&ctx.project)?;
        validate_dns_label("name", &new.name)?;
        let group = ServerGroup::new(ctx.project.clone(), new.name, new.policy, new.strength);
        group.validate()?;
        let group = self.inner.store.create_server_group(group).await?;
        self.inner
            .emit(
                Some(ctx.project.clone()),
                None,
                Some(&ctx.principal),
                EventKind::ServerGroupCreated {
                    group_id: group.id.clone(),
                    name: group.name.clone(),
                    policy: group.policy,
                    strength: group.strength,
                },
            )
            .await;
        Ok(group)
    }

    /// Returns a server group visible in `scope`, with its members.
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] when it does not exist or is outside `scope`.
    pub async fn get_server_group(&self, scope: &Scope, id: &ServerGroupId) -> Result<ServerGroup> {
        self.inner
            .store
            .get_server_group(scope, id)
            .await?
            .ok_or_else(|| Error::not_found("server group", id))
    }

    /// Lists the server groups visible in `scope`, ordered by id.
    ///
    /// # Errors
    /// The store's errors.
    pub async fn list_server_groups(
        &self,
        scope: &Scope,
        page: &PageRequest,
    ) -> Result<Page<ServerGroup>> {
        self.inner.store.list_server_groups(scope, page).await
    }

    /// Deletes an empty server group of the caller's project and records an audit event.
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] when it does not exist in the project;
    /// [`crate::ErrorKind::Conflict`] with code [`crate::CODE_SERVER_GROUP_NOT_EMPTY`] while a
    /// VM is in it (delete the VMs first).
    pub async fn delete_server_group(
        &self,
        ctx: &RequestContext,
        id: &ServerGroupId,
    ) -> Result<()> {
        self.check_project(&ctx.project)?;
        let guard = self.inner.group_locks.lock(id).await;
        let group = self
            .inner
            .store
            .delete_server_group(&ctx.scope(), id)
            .await?;
        drop(guard);
        self.inner.group_locks.forget(id);
        self.inner
            .emit(
                Some(ctx.project.clone()),
                None,
                Some(&ctx.principal),
                EventKind::ServerGroupDeleted {
                    group_id: group.id,
                    name: group.name,
                },
            )
            .await;
        Ok(())
    }
}
