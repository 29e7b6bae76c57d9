//! Leader election for the singleton duties: of several replicas sharing one store, only the
//! leader runs the periodic inventory refresh with drift repair and the retention purges (and,
//! when configured, publishes the audit stream).
//!
//! The engine asks [`Leadership::is_leader`] before each round of those duties. The in-memory
//! (stateless) mode has one process, which is always the leader ([`AlwaysLeader`]); the
//! PostgreSQL store's elector (`hcp_store_postgres::LeaderElector`) holds a lease row with a
//! fencing token that only grows.

use std::fmt;

use async_trait::async_trait;

/// Answers whether this process may run the singleton duties now.
///
/// # Behavior
/// `is_leader` is cheap (no I/O): an elector keeps its answer up to date in the background and
/// answers `false` as soon as it can no longer be sure it holds the lease (its lease ran out
/// before a renewal succeeded), so two processes never both answer `true` for the same lease
/// period. [`Leadership::release`] gives the lease up at a graceful shutdown, so another process
/// takes over at once instead of after the lease runs out.
#[async_trait]
pub trait Leadership: Send + Sync + fmt::Debug + 'static {
    /// Returns true while this process holds the leadership.
    fn is_leader(&self) -> bool;

    /// Returns the fencing token of the current leadership (it only grows from one leader to
    /// the next); `None` while not leader.
    fn token(&self) -> Option<u64>;

    /// Gives the leadership up (graceful shutdown); afterwards [`Leadership::is_leader`] is
    /// false. Best effort: a failure only means the lease runs out by itself.
    async fn release(&self);

    /// Returns the fence the singleton duties' writes carry while this process leads: the
    /// store writes them only while this lease still holds with this token, so a leader that
    /// was paused and deposed cannot act once more. `None` (the default) fences nothing: a
    /// process alone has no one to be fenced from.
    fn fence(&self) -> Option<LeaderFence> {
        None
    }
}

/// The leadership a singleton duty's write is made under (see [`Leadership::fence`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaderFence {
    /// The lease's name.
    pub lease: String,
    /// The fencing token the leadership holds it with.
    pub token: u64,
}

/// The error code of a duty write refused because its leadership has moved on.
pub const CODE_LEADERSHIP_LOST: &str = "LEADERSHIP_LOST";

/// The leadership of a process alone: always the leader (the stateless mode, the in-memory
/// store, one-off engines).
#[derive(Debug, Default, Clone, Copy)]
pub struct AlwaysLeader;

#[async_trait]
impl Leadership for AlwaysLeader {
    fn is_leader(&self) -> bool {
        true
    }

    fn token(&self) -> Option<u64> {
        Some(1)
    }

    async fn release(&self) {}
}
