//! Leader election on PostgreSQL: a lease row per duty group in `leader_leases`.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use hcp_core::{Error, Leadership, Result};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Holds or waits for the leader lease `name` in PostgreSQL; see [`hcp_core::Leadership`].
///
/// # Behavior
/// The lease row names its holder, a fencing token and an expiry on the database's clock.
/// [`LeaderElector::spawn`] runs a task that every `lease / 6` takes the lease when it is free
/// or expired (the token grows by one), or renews it when this elector holds it (the token
/// stays), writing an expiry of `lease / 2` from the database's now. So when a leader dies, its
/// row expires at most `lease / 2` later and another elector takes it at its next attempt: the
/// leadership moves within `lease`. The elector counts its own leadership from just before each
/// successful renewal was sent, for `lease / 2`, and answers [`Leadership::is_leader`] false once
/// that has passed without a renewal (the database unreachable, the task stopped), before the
/// row can expire for anybody else.
pub struct LeaderElector {
    pool: Pool,
    name: String,
    holder: String,
    lease: Duration,
    state: Mutex<Held>,
    /// Stops the renewal task: cancelled by [`Leadership::release`].
    stop: CancellationToken,
}

#[derive(Debug, Clone, Copy, Default)]
struct Held {
    token: Option<u64>,
    until: Option<Instant>,
}

impl fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderElector")
            .field("name", &self.name)
            .field("holder", &self.holder)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl LeaderElector {
    pub(crate) fn new(pool: Pool, name: &str, holder: &str, lease: Duration) -> LeaderElector {
        LeaderElector {
            pool,
            name: name.to_string(),
            holder: holder.to_string(),
            lease,
            state: Mutex::new(Held::default()),
            stop: CancellationToken::new(),
        }
    }

    fn held(&self) -> Held {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, held: Held) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = held;
    }

    /// Returns this elector's holder id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The expiry written to the row: half the lease.
    fn ttl(&self) -> Duration {
        self.lease / 2
    }

    /// Takes the lease when it is free or expired, or renews it when held; returns the token
    /// when this elector holds the lease afterwards.
    ///
    /// # Errors
    /// The store's error when the database cannot be reached (leadership then lapses by time).
    pub async fn try_acquire(&self) -> Result<Option<u64>> {
        let sent = Instant::now();
        let c = self.pool.get().await.map_err(|e| {
            Error::internal("the leader lease's database cannot be reached")
                .with_detail(e.to_string())
                .temporary()
        })?;
        let ttl = self.ttl().as_secs_f64();
        let st = c
            .prepare_cached(
                "INSERT INTO leader_leases AS l (name, holder, token, expires_at)
                 VALUES ($1, $2, 1, now() + make_interval(secs => $3))
                 ON CONFLICT (name) DO UPDATE SET
                     holder = EXCLUDED.holder,
                     token = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at >= now()
                                  THEN l.token ELSE l.token + 1 END,
                     expires_at = EXCLUDED.expires_at
                 WHERE l.holder = EXCLUDED.holder OR l.expires_at < now()
                 RETURNING token",
            )
            .await
            .map_err(db_err)?;
        let row = c
            .query_opt(&st, &[&self.name, &self.holder, &ttl])
            .await
            .map_err(db_err)?;
        let held = match row {
            Some(r) => {
                let token: i64 = r.try_get(0).map_err(db_err)?;
                Held {
                    token: u64::try_from(token).ok(),
                    until: Some(sent + self.ttl()),
                }
            }
            None => Held::default(),
        };
        let before = self.held();
        if before.token != held.token {
            match held.token {
                Some(t) => {
                    tracing::info!(lease = %self.name, holder = %self.holder, token = t, "became the leader")
                }
                None if before.token.is_some() => {
                    tracing::warn!(lease = %self.name, holder = %self.holder, "lost the leadership")
                }
                None => {}
            }
        }
        self.set(held);
        Ok(held.token)
    }

    /// Runs [`LeaderElector::try_acquire`] every `lease / 6` until `shutdown` is cancelled
    /// (then releases the lease) or [`Leadership::release`] is called.
    pub fn spawn(self: &Arc<Self>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let every = (me.lease / 6).max(Duration::from_millis(50));
            loop {
                if let Err(e) = me.try_acquire().await {
                    tracing::warn!(lease = %me.name, error = %e, "cannot renew the leader lease");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = me.stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
            }
            me.release().await;
        })
    }
}

fn db_err(e: tokio_postgres::Error) -> Error {
    Error::internal("the leader lease query failed")
        .with_detail(e.to_string())
        .temporary()
}

#[async_trait]
impl Leadership for LeaderElector {
    fn is_leader(&self) -> bool {
        let h = self.held();
        h.token.is_some() && h.until.is_some_and(|u| Instant::now() < u)
    }

    fn token(&self) -> Option<u64> {
        if self.is_leader() {
            self.held().token
        } else {
            None
        }
    }

    /// The lease's name and token: the store this elector was made from checks them in the
    /// transaction of each duty write.
    fn fence(&self) -> Option<hcp_core::LeaderFence> {
        self.token().map(|token| hcp_core::LeaderFence {
            lease: self.name.clone(),
            token,
        })
    }

    async fn release(&self) {
        self.stop.cancel();
        let was = self.held();
        self.set(Held::default());
        if was.token.is_none() {
            return;
        }
        let Ok(c) = self.pool.get().await else { return };
        // Expired, not deleted: the token stays, so the next holder's is larger.
        let r = c
            .execute(
                "UPDATE leader_leases SET expires_at = '-infinity' WHERE name = $1 AND holder = $2",
                &[&self.name, &self.holder],
            )
            .await;
        match r {
            Ok(_) => {
                tracing::info!(lease = %self.name, holder = %self.holder, "released the leadership")
            }
            Err(e) => {
                tracing::warn!(lease = %self.name, error = %e, "cannot release the leader lease; it runs out by itself")
            }
        }
    }
}
