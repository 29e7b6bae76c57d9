//! Provider layers: retry, timeout, concurrency limits, error context and fault injection as
//! wrappers around any `Arc<dyn Provider>`, so every provider gets them by composition (the
//! OpenDAL layer pattern).
//!
//! A [`Layer`] turns a provider into another provider. [`ProviderExt::layer`] stacks them; the
//! last one added is the outermost, so it sees each call first:
//!
//! ```
//! # fn demo(sim: std::sync::Arc<dyn hcp_core::Provider>) {
//! use std::time::Duration;
//! use hcp_core::layer::{
//!     ConcurrencyLimitLayer, ErrorContextLayer, ProviderExt, RetryLayer, TimeoutLayer,
//! };
//!
//! let provider = sim
//!     .layer(ConcurrencyLimitLayer::new(4))
//!     .layer(TimeoutLayer::new(Duration::from_secs(300)))
//!     .layer(RetryLayer::new().with_max_attempts(3))
//!     .layer(ErrorContextLayer);
//! # let _ = provider; }
//! ```
//!
//! [`crate::EngineBuilder::layer`] applies a stack to every provider an engine builds.
//!
//! # Cancellation and repeats
//! - A call that runs out of time is cancelled, not abandoned: [`TimeoutLayer`] cancels the
//!   call's [`OpContext`] and waits (its `grace`) for the call to return before it answers, so a
//!   retry never runs beside the attempt it replaces. A call that has not stopped by then is
//!   reported as possibly still taking effect, and that error is permanent.
//! - [`RetryLayer`] repeats temporary failures of calls that are safe to repeat
//!   ([`Repeat::Safe`], and [`Repeat::Guarded`] creates, which carry HCP's mark). A reboot, a
//!   snapshot, a migration, a revert or a snapshot delete ([`Repeat::Unsafe`]) runs once;
//!   the engine's job retry looks at the hypervisor before it runs one again.
//!
//! Custom layers implement [`Intercept`] (one method around every call) and wrap with
//! [`Layered`], or implement [`Layer`] directly for full control.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;

use crate::provider::{
    CreateVm, CreatedVm, DeleteSnapshot, DeleteVm, DeletedSnapshot, DeletedVm, GetConsole,
    HostInfo, HostInventory, HostInventoryReply, ListSnapshots, MarkedVm, MigrateVm, MigratedVm,
    NativeSnapshot, OpContext, ProviderInfo, RebootVm, RebootedVm, ResizeVm, ResizedVm,
    RevertSnapshot, RevertedSnapshot, SetMark, SnapshotVm, SnapshottedVm, StartVm, StartedVm,
    StopVm, StoppedVm,
};
use crate::{
    Capabilities, Console, Error, ErrorKind, FieldPlan, Operation, PowerState, Provider, Repeat,
    Result,
};

/// Turns a provider into a provider with more behaviour around each call.
pub trait Layer: fmt::Debug + Send + Sync + 'static {
    /// Wraps `inner`.
    fn layer(&self, inner: Arc<dyn Provider>) -> Arc<dyn Provider>;
}

/// Stacks layers on a provider: `provider.layer(a).layer(b)` puts `b` outside `a`.
pub trait ProviderExt {
    /// Wraps this provider in `layer`.
    fn layer(self, layer: impl Layer) -> Arc<dyn Provider>;
}

impl ProviderExt for Arc<dyn Provider> {
    fn layer(self, layer: impl Layer) -> Arc<dyn Provider> {
        layer.layer(self)
    }
}

/// One provider call as a layer sees it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    provider: &'a str,
    operation: Operation,
    host: Option<&'a str>,
}

impl<'a> Call<'a> {
    /// Describes a call of `operation` on `host` (`None` for provider-wide calls such as
    /// `list_hosts`) to the provider named `provider`.
    pub fn new(provider: &'a str, operation: Operation, host: Option<&'a str>) -> Self {
        Call {
            provider,
            operation,
            host,
        }
    }

    /// Returns the provider instance's name.
    pub fn provider(&self) -> &'a str {
        self.provider
    }

    /// Returns the operation.
    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// Returns the host (or cluster) the call goes to; `None` for provider-wide calls.
    pub fn host(&self) -> Option<&'a str> {
        self.host
    }

    /// Returns whether the call may run again when an attempt's outcome is unknown.
    pub fn repeat(&self) -> Repeat {
        self.operation.repeat()
    }
}

/// Behaviour around every provider call; [`Layered`] turns one into a provider wrapper.
pub trait Intercept: fmt::Debug + Send + Sync + 'static {
    /// Runs `call`: `next` makes one attempt with the context it is given (pass `ctx`, or a
    /// [`OpContext::child`] of it to cancel the attempt alone), and may be called again.
    fn around<'a, T, F, Fut>(
        &'a self,
        call: Call<'a>,
        ctx: &'a OpContext,
        next: F,
    ) -> impl Future<Output = Result<T>> + Send + 'a
    where
        T: Send + 'a,
        F: Fn(OpContext) -> Fut + Send + Sync + 'a,
        Fut: Future<Output = Result<T>> + Send + 'a;
}

/// A provider whose every call runs through an [`Intercept`]; the synchronous methods (name,
/// capabilities, limits) go straight to the inner provider.
pub struct Layered<I> {
    inner: Arc<dyn Provider>,
    name: String,
    intercept: I,
}

impl<I: Intercept> Layered<I> {
    /// Wraps `inner` with `intercept`.
    pub fn new(inner: Arc<dyn Provider>, intercept: I) -> Self {
        let name = inner.info().name;
        Layered {
            inner,
            name,
            intercept,
        }
    }

    fn call<'a>(&'a self, operation: Operation, host: Option<&'a str>) -> Call<'a> {
        Call::new(&self.name, operation, host)
    }
}

impl<I: fmt::Debug> fmt::Debug for Layered<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layered")
            .field("layer", &self.intercept)
            .field("inner", &self.inner)
            .finish()
    }
}

/// Delegates one provider method that takes a context through the intercept.
macro_rules! around_ctx {
    ($self:ident, $ctx:ident, $args:ident, $op:expr, $host:expr, $method:ident) => {{
        let p = &$self.inner;
        let args = &$args;
        $self
            .intercept
            .around($self.call($op, Some($host)), $ctx, |c| {
                let a = args.clone();
                async move { p.$method(&c, a).await }
            })
            .await
    }};
}

/// Delegates one provider method without a context through the intercept.
macro_rules! around_plain {
    ($self:ident, $args:ident, $op:expr, $host:expr, $method:ident) => {{
        let p = &$self.inner;
        let args = &$args;
        let ctx = OpContext::detached();
        $self
            .intercept
            .around($self.call($op, Some($host)), &ctx, |_| {
                let a = args.clone();
                async move { p.$method(a).await }
            })
            .await
    }};
}

#[async_trait]
impl<I: Intercept> Provider for Layered<I> {
    fn info(&self) -> ProviderInfo {
        self.inner.info()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn check_snapshot_name(&self, name: &str) -> Result<()> {
        self.inner.check_snapshot_name(name)
    }

    fn max_snapshots_per_vm(&self) -> Option<u32> {
        self.inner.max_snapshots_per_vm()
    }

    fn refine_resize_plan(&self, power: PowerState, plan: &mut [FieldPlan]) {
        self.inner.refine_resize_plan(power, plan);
    }

    async fn list_hosts(&self) -> Result<Vec<HostInfo>> {
        let p = &self.inner;
        let ctx = OpContext::detached();
        self.intercept
            .around(self.call(Operation::ListHosts, None), &ctx, |_| {
                p.list_hosts()
            })
            .await
    }

    async fn host_inventory(&self, args: HostInventory) -> Result<HostInventoryReply> {
        around_plain!(
            self,
            args,
            Operation::HostInventory,
            &args.host,
            host_inventory
        )
    }

    async fn create_vm(&self, ctx: &OpContext, args: CreateVm) -> Result<CreatedVm> {
        around_ctx!(self, ctx, args, Operation::CreateVm, &args.host, create_vm)
    }

    async fn delete_vm(&self, ctx: &OpContext, args: DeleteVm) -> Result<DeletedVm> {
        around_ctx!(
            self,
            ctx,
            args,
            Operation::DeleteVm,
            &args.target.host,
            delete_vm
        )
    }

    async fn start_vm(&self, ctx: &OpContext, args: StartVm) -> Result<StartedVm> {
        around_ctx!(
            self,
            ctx,
            args,
            Operation::StartVm,
            &args.target.host,
            start_vm
        )
    }

    async fn stop_vm(&self, ctx: &OpContext, args: StopVm) -> Result<StoppedVm> {
        around_ctx!(
            self,
            ctx,
            args,
            Operation::StopVm,
            &args.target.host,
            stop_vm
        )
    }

    async fn reboot_vm(&self, ctx: &OpContext, args: RebootVm) -> Result<RebootedVm> {
        around_ctx!(
            self,
            ctx,
            args,
            Operation::RebootVm,
            &args.target.host,
            reboot_vm
        )
    }

    async fn console(&self, args: GetConsole) -> Result<Console> {
        around_plain!(self, args, Operation::Console, &args.target.host, console)
    }

    async fn snapshot_vm(&self, ctx: &OpContext, args: SnapshotVm) -> Result<SnapshottedVm> {
        around_ctx!(
            self,
            ctx,
            args,
            Operation::SnapshotVm,
            &args.target.host,
            snapshot_vm
        )
    }

    async fn list_snapshots(&self, args: ListSnapshots) -> Result<Vec<NativeSnapshot>> {
        around_plain!(
            self,
            args,
            Operation::ListSnapshots,
            &args.target.host,
            list_snapshots
        )
    }

    async fn revert_snapshot(
        &self,
        ctx: &OpContext,
        args: RevertSnapshot,
    ) -> Result<RevertedSnapshot> {
        around_ctx!(
            self,
            ctx,
            args,
            Operation::RevertSnapshot,
            &args.target.host,
            revert_snapshot
        )
    }

    async fn delete_snapshot(
        &self,
        ctx: &OpContext,
        args: DeleteSnapshot,
    ) -> Result<DeletedSnapshot> {
        around_ctx!(
            self,
            ctx,
            args,
            Operation::DeleteSnapshot,
            &args.target.host,
            delete_snapshot
        )
    }

    async fn resize_vm(&self, ctx: &OpContext, args: ResizeVm) -> Result<ResizedVm> {
        around_ctx!(
            self,
            ctx,
            args,
            Operation::ResizeVm,
            &args.target.host,
            resize_vm
        )
    }

    async fn set_mark(&self, ctx: &OpContext, args: SetMark) -> Result<MarkedVm> {
        let op = if args.mark.is_some() {
            Operation::AdoptVm
        } else {
            Operation::ReleaseVm
        };
        around_ctx!(self, ctx, args, op, &args.target.host, set_mark)
    }

    async fn migrate_vm(&self, ctx: &OpContext, args: MigrateVm) -> Result<MigratedVm> {
        around_ctx!(
            self,
            ctx,
            args,
            Operation::MigrateVm,
            &args.target.host,
            migrate_vm
        )
    }
}

/// Wraps a provider in an [`Intercept`] that is cloned for each provider it wraps.
macro_rules! intercept_layer {
    ($ty:ty) => {
        impl Layer for $ty {
            fn layer(&self, inner: Arc<dyn Provider>) -> Arc<dyn Provider> {
                Arc::new(Layered::new(inner, self.clone()))
            }
        }
    };
}

/// Bounds each call's time; on expiry it cancels the call and waits for it to stop.
///
/// # Behavior
/// - A call that has not answered within its timeout has its [`OpContext`] cancelled. The
///   layer then keeps waiting, up to the grace period, for the call to return, so the
///   attempt has ended before anything (a retry, a cleanup) runs after it.
/// - A call that answers successfully within the grace keeps its answer: the work is done.
/// - A call that fails or stops within the grace fails with [`ErrorKind::Timeout`]. That error
///   is temporary when the operation may be repeated ([`Repeat::may_repeat`]), permanent
///   otherwise.
/// - A call still running after the grace is dropped (which cancels every async provider's
///   call), and fails with a permanent [`ErrorKind::Timeout`] saying it may still take effect.
#[derive(Debug, Clone)]
pub struct TimeoutLayer {
    timeout: Duration,
    per_operation: HashMap<Operation, Duration>,
    grace: Duration,
}

impl TimeoutLayer {
    /// Bounds every call to `timeout`, with a grace of 30 s for a cancelled call to stop.
    pub fn new(timeout: Duration) -> Self {
        TimeoutLayer {
            timeout,
            per_operation: HashMap::new(),
            grace: Duration::from_secs(30),
        }
    }

    /// Bounds calls of `operation` to `timeout` instead.
    pub fn with_operation_timeout(mut self, operation: Operation, timeout: Duration) -> Self {
        self.per_operation.insert(operation, timeout);
        self
    }

    /// Sets how long a cancelled call is given to stop.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Returns the timeout of calls of `operation`.
    pub fn timeout_of(&self, operation: Operation) -> Duration {
        self.per_operation
            .get(&operation)
            .copied()
            .unwrap_or(self.timeout)
    }
}

intercept_layer!(TimeoutLayer);

impl Intercept for TimeoutLayer {
    async fn around<'a, T, F, Fut>(
        &'a self,
        call: Call<'a>,
        ctx: &'a OpContext,
        next: F,
    ) -> Result<T>
    where
        T: Send + 'a,
        F: Fn(OpContext) -> Fut + Send + Sync + 'a,
        Fut: Future<Output = Result<T>> + Send + 'a,
    {
        let limit = self.timeout_of(call.operation());
        let attempt = ctx.child();
        let fut = next(attempt.clone());
        tokio::pin!(fut);
        tokio::select! {
            r = &mut fut => return r,
            () = tokio::time::sleep(limit) => {}
        }
        attempt.cancel();
        let took = humantime::format_duration(limit);
        match tokio::time::timeout(self.grace, &mut fut).await {
            Ok(Ok(v)) => {
                tracing::warn!(
                    provider = call.provider(),
                    host = call.host().unwrap_or(""),
                    operation = call.operation().as_str(),
                    "a provider call answered after its timeout was cancelled; its answer is kept"
                );
                Ok(v)
            }
            Ok(Err(e)) => {
                let err = Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "the hypervisor did not finish {} within {took}; the call was stopped",
                        call.operation()
                    ),
                )
                .with_detail(format!("the stopped call said: {}", e.message()));
                Err(if call.repeat().may_repeat() {
                    err.temporary()
                } else {
                    err
                })
            }
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "the hypervisor did not finish {} within {took}, and the call had not stopped {} after it was cancelled; it may still take effect",
                    call.operation(),
                    humantime::format_duration(self.grace)
                ),
            )),
        }
    }
}

/// Repeats calls that failed with a temporary error, when they are safe to repeat.
///
/// # Behavior
/// - Only errors marked temporary are retried, at most `max_attempts` attempts in all, with an
///   exponential backoff (200 ms doubling to 5 s by default, with jitter).
/// - Only [`Repeat::Safe`] and [`Repeat::Guarded`] calls are retried; an [`Repeat::Unsafe`]
///   call's error is returned as it is.
/// - A cancelled context ends the backoff early with the last error.
/// - The last error is returned unchanged (still temporary), so the engine's job retry, which
///   waits longer, may try again.
#[derive(Debug, Clone)]
pub struct RetryLayer {
    max_attempts: u32,
    min_delay: Duration,
    max_delay: Duration,
    jitter: bool,
}

impl Default for RetryLayer {
    fn default() -> Self {
        RetryLayer::new()
    }
}

impl RetryLayer {
    /// Three attempts, 200 ms doubling to 5 s between them, with jitter.
    pub fn new() -> Self {
        RetryLayer {
            max_attempts: 3,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            jitter: true,
        }
    }

    /// Sets the most attempts in all (at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets the first and the longest delay between attempts.
    pub fn with_delays(mut self, min: Duration, max: Duration) -> Self {
        self.min_delay = min;
        self.max_delay = max.max(min);
        self
    }

    /// Switches the jitter on the delays on or off.
    pub fn with_jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }
}

intercept_layer!(RetryLayer);

impl Intercept for RetryLayer {
    async fn around<'a, T, F, Fut>(
        &'a self,
        call: Call<'a>,
        ctx: &'a OpContext,
        next: F,
    ) -> Result<T>
    where
        T: Send + 'a,
        F: Fn(OpContext) -> Fut + Send + Sync + 'a,
        Fut: Future<Output = Result<T>> + Send + 'a,
    {
        let mut builder = backon::ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_max_times(usize::MAX);
        if self.jitter {
            builder = builder.with_jitter();
        }
        let mut delays = backon::BackoffBuilder::build(builder);
        let mut attempt = 1;
        loop {
            match next(ctx.clone()).await {
                Err(e)
                    if e.is_temporary()
                        && call.repeat().may_repeat()
                        && attempt < self.max_attempts
                        && !ctx.is_cancelled() =>
                {
                    let delay = delays.next().unwrap_or(self.max_delay);
                    tracing::debug!(
                        provider = call.provider(),
                        host = call.host().unwrap_or(""),
                        operation = call.operation().as_str(),
                        attempt,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        error = %e,
                        "a provider call failed with a temporary error; repeating it"
                    );
                    tokio::select! {
                        () = ctx.cancelled() => return Err(e),
                        () = tokio::time::sleep(delay) => {}
                    }
                    attempt += 1;
                }
                r => return r,
            }
        }
    }
}

/// Lets at most `per_host` calls run at once on each host (or cluster) of the provider it
/// wraps; provider-wide calls (`list_hosts`) are not limited.
///
/// # Behavior
/// A call waits for a free slot; a cancelled context ends the wait with
/// [`ErrorKind::Cancelled`]. Each provider wrapped by the same layer gets its own slots.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitLayer {
    per_host: usize,
}

impl ConcurrencyLimitLayer {
    /// Lets at most `per_host` calls (at least 1) run at once on each host.
    pub fn new(per_host: usize) -> Self {
        ConcurrencyLimitLayer {
            per_host: per_host.max(1),
        }
    }
}

impl Layer for ConcurrencyLimitLayer {
    fn layer(&self, inner: Arc<dyn Provider>) -> Arc<dyn Provider> {
        Arc::new(Layered::new(
            inner,
            ConcurrencyLimit {
                per_host: self.per_host,
                slots: Mutex::new(HashMap::new()),
            },
        ))
    }
}

/// The per-host slots of one provider wrapped by a [`ConcurrencyLimitLayer`].
#[derive(Debug)]
struct ConcurrencyLimit {
    per_host: usize,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Intercept for ConcurrencyLimit {
    async fn around<'a, T, F, Fut>(
        &'a self,
        call: Call<'a>,
        ctx: &'a OpContext,
        next: F,
    ) -> Result<T>
    where
        T: Send + 'a,
        F: Fn(OpContext) -> Fut + Send + Sync + 'a,
        Fut: Future<Output = Result<T>> + Send + 'a,
    {
        let Some(host) = call.host() else {
            return next(ctx.clone()).await;
        };
        let slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(host.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
            .clone();
        let _permit = tokio::select! {
            p = slots.acquire_owned() => p.map_err(|_| Error::internal("a host's call slots were closed"))?,
            () = ctx.cancelled() => {
                return Err(Error::new(
                    ErrorKind::Cancelled,
                    format!("{} was cancelled while waiting for a free call slot", call.operation()),
                ));
            }
        };
        next(ctx.clone()).await
    }
}

/// Names the operation, the provider and the host on every error a call returns.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorContextLayer;

intercept_layer!(ErrorContextLayer);

impl Intercept for ErrorContextLayer {
    async fn around<'a, T, F, Fut>(
        &'a self,
        call: Call<'a>,
        ctx: &'a OpContext,
        next: F,
    ) -> Result<T>
    where
        T: Send + 'a,
        F: Fn(OpContext) -> Fut + Send + Sync + 'a,
        Fut: Future<Output = Result<T>> + Send + 'a,
    {
        next(ctx.clone()).await.map_err(|e| {
            let e = e
                .with_operation(call.operation())
                .with_context("provider", call.provider());
            match call.host() {
                Some(h) => e.with_context("host", h),
                None => e,
            }
        })
    }
}

/// Injects latency, failures and hangs into calls, for tests and game days.
///
/// # Behavior
/// - Every call first waits the configured latency.
/// - A call of an operation set to hang never reaches the provider: it waits until its context
///   is cancelled, then fails with [`ErrorKind::Cancelled`].
/// - Otherwise a call fails, at the configured rate, with a temporary
///   [`ErrorKind::ProviderUnavailable`] before reaching the provider. The rolls come from a
///   seeded generator, so a run repeats.
#[derive(Debug, Clone)]
pub struct FaultLayer {
    seed: u64,
    failure_rate: f64,
    latency: Duration,
    hang: HashSet<Operation>,
}

impl FaultLayer {
    /// Injects nothing yet; `seed` seeds the failure rolls.
    pub fn new(seed: u64) -> Self {
        FaultLayer {
            seed,
            failure_rate: 0.0,
            latency: Duration::ZERO,
            hang: HashSet::new(),
        }
    }

    /// Fails this share of calls (0.0–1.0, clamped).
    pub fn with_failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self
    }

    /// Delays every call by `latency`.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Makes calls of `operation` hang until they are cancelled.
    pub fn with_hang(mut self, operation: Operation) -> Self {
        self.hang.insert(operation);
        self
    }
}

impl Layer for FaultLayer {
    fn layer(&self, inner: Arc<dyn Provider>) -> Arc<dyn Provider> {
        Arc::new(Layered::new(
            inner,
            Faults {
                layer: self.clone(),
                rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(self.seed)),
            },
        ))
    }
}

/// The seeded state of one provider wrapped by a [`FaultLayer`].
#[derive(Debug)]
struct Faults {
    layer: FaultLayer,
    rng: Mutex<rand::rngs::StdRng>,
}

impl Intercept for Faults {
    async fn around<'a, T, F, Fut>(
        &'a self,
        call: Call<'a>,
        ctx: &'a OpContext,
        next: F,
    ) -> Result<T>
    where
        T: Send + 'a,
        F: Fn(OpContext) -> Fut + Send + Sync + 'a,
        Fut: Future<Output = Result<T>> + Send + 'a,
    {
        let cancelled = || {
            Error::new(
                ErrorKind::Cancelled,
                format!("{} was cancelled", call.operation()),
            )
        };
        if !self.layer.latency.is_zero() {
            tokio::select! {
                () = ctx.cancelled() => return Err(cancelled()),
                () = tokio::time::sleep(self.layer.latency) => {}
            }
        }
        if self.layer.hang.contains(&call.operation()) {
            ctx.cancelled().await;
            return Err(cancelled());
        }
        if self.layer.failure_rate > 0.0 {
            let roll: f64 = self
                .rng
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .random();
            if roll < self.layer.failure_rate {
                return Err(Error::new(
                    ErrorKind::ProviderUnavailable,
                    format!("injected fault: {} failed", call.operation()),
                )
                .temporary());
            }
        }
        next(ctx.clone()).await
    }
}
