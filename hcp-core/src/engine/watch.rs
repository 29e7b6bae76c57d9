//! Job logs: one writer appends every line to the store in order and then hands it to live
//! watchers; a watcher reads past lines first, then live ones, without gaps or repeats.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{HashMap, Inner, lock, worker};
use crate::store::{LogBatch, Scope};
use crate::{Error, JobId, JobUpdate, LogEntry, Result};

/// The live watchers of jobs, by job: one broadcast sender per watched job.
///
/// How many jobs are watched is readable without the lock, and a job nobody watches (nearly
/// every job) is told nothing without taking it: each worker would otherwise take this one lock,
/// shared by every job, several times per job. A watcher registers before it reads the job and
/// its lines from the store, and a worker looks here after it wrote to the store, so either the
/// worker sees the watcher or the watcher reads what the worker wrote.
#[derive(Debug, Default)]
pub(crate) struct Watchers {
    map: std::sync::Mutex<HashMap<JobId, broadcast::Sender<JobUpdate>>>,
    /// The map's length, written under its lock after each change.
    watched: std::sync::atomic::AtomicUsize,
}

impl Watchers {
    /// Runs `f` on the map under its lock and keeps the count in step.
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<JobId, broadcast::Sender<JobUpdate>>) -> R) -> R {
        let mut map = lock(&self.map);
        let r = f(&mut map);
        self.watched
            .store(map.len(), std::sync::atomic::Ordering::SeqCst);
        r
    }

    /// Returns true when some job is watched (read without the lock).
    fn any(&self) -> bool {
        self.watched.load(std::sync::atomic::Ordering::SeqCst) != 0
    }

    /// Returns the sender of job `id`'s watchers, when it has any.
    pub(crate) fn get(&self, id: &JobId) -> Option<broadcast::Sender<JobUpdate>> {
        if !self.any() {
            return None;
        }
        lock(&self.map).get(id).cloned()
    }

    /// Removes and returns the sender of job `id`'s watchers, when it has any.
    pub(crate) fn remove(&self, id: &JobId) -> Option<broadcast::Sender<JobUpdate>> {
        if !self.any() {
            return None;
        }
        self.with(|m| m.remove(id))
    }
}

pub(crate) enum LogMsg {
    Line {
        job_id: JobId,
        at: DateTime<Utc>,
        entry: LogEntry,
    },
    Progress {
        job_id: JobId,
        percent: u8,
    },
    /// The job ended (as written here): after every line sent before this message, tell
    /// watchers.
    Finalize(Box<crate::Job>),
    /// Answers once every message sent before it has been handled.
    Flush(oneshot::Sender<()>),
}

impl LogMsg {
    pub(crate) fn line(job_id: &JobId, entry: LogEntry) -> Self {
        LogMsg::Line {
            job_id: job_id.clone(),
            at: crate::clock::system_now(),
            entry,
        }
    }
}

/// The most messages the log writer takes from its queue at once.
const LOG_BATCH: usize = 512;

pub(crate) fn spawn_log_writer(inner: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<LogMsg>) {
    tokio::spawn(async move {
        let mut msgs = Vec::with_capacity(LOG_BATCH);
        while rx.recv_many(&mut msgs, LOG_BATCH).await > 0 {
            let Some(inner) = inner.upgrade() else { return };
            // One writer serves every job's log: a panic costs one batch, never the writer.
            let write = AssertUnwindSafe(write_logs(&inner, msgs.drain(..))).catch_unwind();
            if let Err(panic) = write.await {
                tracing::error!(
                    panic = super::panic_message(panic.as_ref()),
                    "the job log writer panicked on a batch of messages; it goes on with the next"
                );
            }
        }
    });
}

/// Handles queued messages in order. Lines that queued up together go to the store in one
/// [`crate::store::Store::append_logs_batch`] (one commit on a durable store); any other
/// message first waits for the lines queued before it.
async fn write_logs(inner: &Arc<Inner>, msgs: impl Iterator<Item = LogMsg>) {
    let mut lines: LogBatch = Vec::new();
    for msg in msgs {
        match msg {
            LogMsg::Line { job_id, at, entry } => match lines.last_mut() {
                Some((last, batch)) if *last == job_id => batch.push((at, entry)),
                _ => lines.push((job_id, vec![(at, entry)])),
            },
            LogMsg::Progress { job_id, percent } => {
                flush_lines(inner, std::mem::take(&mut lines)).await;
                progress(inner, job_id, percent);
            }
            LogMsg::Finalize(job) => {
                flush_lines(inner, std::mem::take(&mut lines)).await;
                worker::announce_end(inner, job);
            }
            LogMsg::Flush(done) => {
                flush_lines(inner, std::mem::take(&mut lines)).await;
                let _ = done.send(());
            }
        }
    }
    flush_lines(inner, lines).await;
}

/// Keeps a running job's progress in memory until its next state write, and tells watchers
/// now.
fn progress(inner: &Inner, job_id: JobId, percent: u8) {
    let watcher = inner.watchers.get(&job_id);
    lock(&inner.progress).insert(job_id, percent);
    if let Some(tx) = watcher {
        let _ = tx.send(JobUpdate::Status {
            state: crate::JobState::Running,
            progress: percent,
            pending_reason: None,
        });
    }
}

/// Hands `msg` to the log writer; on an in-memory store ([`crate::store::Store::as_memory`]),
/// does at once what the writer would do with it: a line goes into the store and to the job's
/// watchers, progress into memory and to watchers, an end to the observer and watchers. Either
/// way a job's messages take effect in the order its worker sent them.
pub(crate) fn send(inner: &Inner, msg: LogMsg) {
    let Some(store) = inner.store.as_memory() else {
        let _ = inner.logs.send(msg);
        return;
    };
    match msg {
        LogMsg::Line { job_id, at, entry } => match store.append_logs_now(&job_id, [(at, entry)]) {
            // Read back only for a watcher. One that registers after this look reads its past
            // lines from the store, where the line is already.
            Ok(first) => {
                if let Some(tx) = inner.watchers.get(&job_id) {
                    tell(&tx, &job_id, store.logs_from(&job_id, first));
                }
            }
            Err(e) => tracing::warn!(%job_id, error = %e, "cannot append a job log line"),
        },
        LogMsg::Progress { job_id, percent } => progress(inner, job_id, percent),
        LogMsg::Finalize(job) => worker::announce_end(inner, job),
        LogMsg::Flush(done) => {
            let _ = done.send(());
        }
    }
}

async fn flush_lines(inner: &Arc<Inner>, lines: LogBatch) {
    if lines.is_empty() {
        return;
    }
    if !inner.store.durable() {
        // An in-memory append costs no commit: one call per job keeps its id without a copy.
        for (job_id, entries) in lines {
            let written = inner.store.append_logs(&job_id, entries).await;
            tell_watchers(inner, &job_id, written);
        }
        return;
    }
    let ids: Vec<JobId> = lines.iter().map(|(id, _)| id.clone()).collect();
    let written = inner.store.append_logs_batch(lines).await;
    for (job_id, result) in ids.iter().zip(written) {
        tell_watchers(inner, job_id, result);
    }
}

/// Hands a job's appended lines to its watchers, or logs why they were not appended.
fn tell_watchers(inner: &Inner, job_id: &JobId, written: Result<Vec<crate::JobLogLine>>) {
    match inner.watchers.get(job_id) {
        Some(tx) => tell(&tx, job_id, written),
        None => {
            if let Err(e) = written {
                tracing::warn!(%job_id, error = %e, "cannot append job log lines");
            }
        }
    }
}

/// Hands a job's appended lines to its watchers' sender `tx`, or logs why they were not
/// appended.
fn tell(
    tx: &broadcast::Sender<JobUpdate>,
    job_id: &JobId,
    written: Result<Vec<crate::JobLogLine>>,
) {
    match written {
        Ok(lines) => {
            for l in lines {
                let _ = tx.send(JobUpdate::Log(l));
            }
        }
        Err(e) => tracing::warn!(%job_id, error = %e, "cannot append job log lines"),
    }
}

/// A live view of one job: past log lines, then live lines and status changes, then the end.
///
/// Obtained from [`crate::Engine::watch_job`]; read it with [`JobWatch::next`] or turn it into
/// a stream with [`JobWatch::into_stream`].
///
/// # Behavior
/// Lines and status changes of a job this process runs arrive as they happen. Where jobs may
/// run in another process (replicas sharing a database, or an engine without workers), the
/// watch also reads the store every half second, so a watch on any replica sees every line, in
/// order, and the job's end. A process alone on its store reads nothing more than before.
pub struct JobWatch {
    inner: Arc<Inner>,
    job_id: JobId,
    rx: Option<broadcast::Receiver<JobUpdate>>,
    backlog: VecDeque<JobUpdate>,
    last_seq: u64,
    done: bool,
    /// The last state and progress returned, so a polled status is returned only when new.
    seen: Option<(crate::JobState, u8)>,
    /// Reads the store every [`WATCH_POLL`] when the job may run in another process; `None`
    /// when every job of this store runs here, whose updates all come through `rx`.
    poll: Option<tokio::time::Interval>,
}

/// How often a watch reads its job and new log lines from the store, for a job whose worker
/// runs in another process.
pub(crate) const WATCH_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// How long a watch that read a job's end from the store waits before reading the job's last
/// lines: a worker in another process writes its final lines just after the end.
const LATE_LINES: std::time::Duration = std::time::Duration::from_millis(200);

impl std::fmt::Debug for JobWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobWatch")
            .field("job_id", &self.job_id)
            .finish_non_exhaustive()
    }
}

impl JobWatch {
    pub(crate) async fn start(
        inner: &Arc<Inner>,
        scope: &Scope,
        job_id: &JobId,
    ) -> Result<JobWatch> {
        // Subscribe before reading the past, so no line falls between the two.
        let rx = inner.watchers.with(|watchers| {
            watchers
                .entry(job_id.clone())
                .or_insert_with(|| broadcast::channel(1024).0)
                .subscribe()
        });
        let job = match inner.store.get_job(scope, job_id).await {
            Ok(Some(j)) => j,
            Ok(None) => {
                drop_if_unused(inner, job_id);
                return Err(Error::not_found("job", job_id));
            }
            Err(e) => {
                drop_if_unused(inner, job_id);
                return Err(e);
            }
        };
        if job.state.is_terminal() {
            // A job is marked ended before the log writer has necessarily written its last
            // lines (they are queued before the state write); wait for them so none is lost.
            let (done, written) = oneshot::channel();
            if inner.logs.send(LogMsg::Flush(done)).is_ok() {
                let _ = written.await;
            }
        }
        let past = inner.store.job_logs(job_id, 0).await?;
        let last_seq = past.last().map_or(0, |l| l.seq);
        let seen = Some((job.state, job.progress));
        let mut backlog: VecDeque<JobUpdate> = past.into_iter().map(JobUpdate::Log).collect();
        let rx = if job.state.is_terminal() {
            drop(rx);
            drop_if_unused(inner, job_id);
            backlog.push_back(JobUpdate::End(Box::new(job)));
            None
        } else {
            backlog.push_back(JobUpdate::Status {
                state: job.state,
                progress: job.progress,
                pending_reason: job.pending_reason.clone(),
            });
            Some(rx)
        };
        let poll = inner.jobs_run_elsewhere().then(|| {
            let mut poll =
                tokio::time::interval_at(tokio::time::Instant::now() + WATCH_POLL, WATCH_POLL);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            poll
        });
        Ok(JobWatch {
            inner: inner.clone(),
            job_id: job_id.clone(),
            rx,
            backlog,
            last_seq,
            done: false,
            seen,
            poll,
        })
    }

    /// Returns the next update, or `None` after the job's end has been returned.
    pub async fn next(&mut self) -> Option<JobUpdate> {
        loop {
            if let Some(u) = self.backlog.pop_front() {
                if matches!(u, JobUpdate::End(_)) {
                    self.done = true;
                    self.rx = None;
                }
                return Some(u);
            }
            if self.done {
                return None;
            }
            let Some(rx) = self.rx.as_mut() else {
                self.done = true;
                return None;
            };
            let received = match self.poll.as_mut() {
                Some(poll) => tokio::select! {
                    r = rx.recv() => Some(r),
                    _ = poll.tick() => None,
                },
                None => Some(rx.recv().await),
            };
            let Some(received) = received else {
                self.poll_store().await;
                continue;
            };
            match received {
                Ok(JobUpdate::Log(l)) => {
                    if l.seq > self.last_seq {
                        self.last_seq = l.seq;
                        return Some(JobUpdate::Log(l));
                    }
                }
                Ok(JobUpdate::End(job)) => {
                    self.catch_up().await;
                    self.backlog.push_back(JobUpdate::End(job));
                }
                Ok(status) => {
                    if let JobUpdate::Status {
                        state, progress, ..
                    } = &status
                    {
                        self.seen = Some((*state, *progress));
                    }
                    return Some(status);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up().await,
                Err(broadcast::error::RecvError::Closed) => {
                    self.catch_up().await;
                    if let Ok(Some(job)) = self.inner.store.get_job(&Scope::All, &self.job_id).await
                    {
                        self.backlog.push_back(JobUpdate::End(Box::new(job)));
                    } else {
                        self.done = true;
                    }
                }
            }
        }
    }

    /// Turns the watch into a stream of updates.
    pub fn into_stream(self) -> impl futures::Stream<Item = JobUpdate> + Send + 'static {
        futures::stream::unfold(self, |mut w| async move { w.next().await.map(|u| (u, w)) })
    }

    /// Reads what another process may have written: new lines, a new status, the end.
    async fn poll_store(&mut self) {
        self.catch_up().await;
        match self.inner.store.get_job(&Scope::All, &self.job_id).await {
            Ok(Some(job)) if job.state.is_terminal() => {
                // This process's own last lines are queued before the end is announced; another
                // process's land just after its end: wait for both, then read them.
                let (done, written) = oneshot::channel();
                if self.inner.logs.send(LogMsg::Flush(done)).is_ok() {
                    let _ = written.await;
                }
                tokio::time::sleep(LATE_LINES).await;
                self.catch_up().await;
                self.backlog.push_back(JobUpdate::End(Box::new(job)));
            }
            Ok(Some(job)) => {
                if self.seen != Some((job.state, job.progress)) {
                    self.seen = Some((job.state, job.progress));
                    self.backlog.push_back(JobUpdate::Status {
                        state: job.state,
                        progress: job.progress,
                        pending_reason: job.pending_reason.clone(),
                    });
                }
            }
            // Purged meanwhile: nothing more will come.
            Ok(None) => self.done = true,
            // The store failed this once: the next poll tries again.
            Err(e) => {
                tracing::debug!(job_id = %self.job_id, error = %e, "cannot read a watched job")
            }
        }
    }

    async fn catch_up(&mut self) {
        if let Ok(lines) = self.inner.store.job_logs(&self.job_id, self.last_seq).await {
            for l in lines {
                self.last_seq = l.seq;
                self.backlog.push_back(JobUpdate::Log(l));
            }
        }
    }
}

fn drop_if_unused(inner: &Inner, job_id: &JobId) {
    inner.watchers.with(|watchers| {
        if watchers
            .get(job_id)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            watchers.remove(job_id);
        }
    });
}

impl Drop for JobWatch {
    fn drop(&mut self) {
        self.rx = None;
        drop_if_unused(&self.inner, &self.job_id);
    }
}
