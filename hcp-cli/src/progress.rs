//! Waiting for a job: silently, with a spinner and its log lines on a terminal, or with plain
//! log lines when stderr is a file or a pipe. Ctrl-C cancels the job (in remote mode through the
//! service's cancel route) and waiting goes on until the job ends; a second Ctrl-C stops
//! waiting at once.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use hcp_core::{JobId, JobState, ProjectId};
use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::Backend;
use crate::output;
use crate::views::{Interrupted, JobEvent, JobView};

/// How progress is shown on stderr while waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Nothing.
    Quiet,
    /// A spinner with the job's state, log lines above it.
    Spinner,
    /// One line per log line and state change.
    Lines,
}

impl Progress {
    /// Chooses how to show progress: nothing unless `--wait`, a spinner on a terminal.
    pub fn for_wait(wait: bool) -> Progress {
        if !wait {
            Progress::Quiet
        } else if std::io::stderr().is_terminal() {
            Progress::Spinner
        } else {
            Progress::Lines
        }
    }
}

/// Shows one job's progress.
struct Display {
    mode: Progress,
    job_id: JobId,
    bar: Option<ProgressBar>,
    last_status: Option<(JobState, u8)>,
}

impl Display {
    fn new(mode: Progress, job_id: &JobId) -> Display {
        let bar = (mode == Progress::Spinner).then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed}]")
            {
                bar.set_style(style);
            }
            bar.set_prefix(job_id.to_string());
            bar.set_message("PENDING");
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Display {
            mode,
            job_id: job_id.clone(),
            bar,
            last_status: None,
        }
    }

    fn say(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => {
                let _ = writeln!(std::io::stderr(), "{} {text}", self.job_id);
            }
        }
    }

    fn event(&mut self, event: &JobEvent) {
        if self.mode == Progress::Quiet {
            return;
        }
        match event {
            JobEvent::Log(line) => self.say(&output::log_line(line)),
            JobEvent::Status {
                state,
                progress,
                pending_reason,
            } => {
                if self.last_status == Some((*state, *progress)) {
                    return;
                }
                self.last_status = Some((*state, *progress));
                let mut text = format!("{state} {progress}%");
                if let Some(reason) = pending_reason {
                    text.push_str(&format!(" ({reason})"));
                }
                match &self.bar {
                    Some(bar) => bar.set_message(text),
                    None => self.say(&text),
                }
            }
            JobEvent::End { job } => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                let took = job
                    .finished_at
                    .zip(job.started_at)
                    .and_then(|(end, start)| (end - start).to_std().ok())
                    .map(|d| format!(" in {:.1}s", d.as_secs_f64()))
                    .unwrap_or_default();
                let _ = writeln!(
                    std::io::stderr(),
                    "{} {} {}{took}",
                    job.id,
                    job.operation,
                    job.state
                );
            }
        }
    }

    fn note(&self, text: &str) {
        self.say(text);
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Waits until `job_id` ends and returns it, showing progress per `mode`.
///
/// # Errors
/// An unknown job, a broken log stream (remote mode), or [`Interrupted`] after Ctrl-C.
pub async fn follow(
    backend: &Backend,
    project: Option<&ProjectId>,
    job_id: &JobId,
    mode: Progress,
) -> anyhow::Result<JobView> {
    // Take over SIGINT before anything is shown: a Ctrl-C right after the first log line must
    // reach the loop below, not end the process.
    let mut interrupts = Interrupts::new()?;
    let mut stream = backend.watch_job(project, job_id).await?;
    let mut display = Display::new(mode, job_id);
    let mut cancelling = false;
    loop {
        tokio::select! {
            event = stream.next() => match event {
                Some(event) => {
                    let event = event?;
                    display.event(&event);
                    if let JobEvent::End { job } = event {
                        return Ok(*job);
                    }
                }
                None => return Ok(backend.get_job(project, job_id).await?),
            },
            () = interrupts.recv() => {
                INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
                if cancelling {
                    let detached = backend.is_remote();
                    return Err(Interrupted { job_id: job_id.clone(), detached }.into());
                }
                cancelling = true;
                display.note("interrupted: cancelling the job; press Ctrl-C again to stop waiting");
                if let Err(e) = backend.cancel_job(project, job_id).await {
                    display.note(&format!("cannot cancel: {}", e.message()));
                }
            }
        }
    }
}

/// Set once the user pressed Ctrl-C while a command waited for a job: the command then exits
/// 130 whatever the job's end (the interrupt cancelled it).
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Returns true when the user pressed Ctrl-C while this process waited for a job.
pub fn was_interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Ctrl-C presses, caught from the moment this is created.
struct Interrupts {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn new() -> anyhow::Result<Interrupts> {
        #[cfg(unix)]
        {
            use anyhow::Context;
            let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .context("cannot catch Ctrl-C")?;
            Ok(Interrupts { signal })
        }
        #[cfg(not(unix))]
        Ok(Interrupts {})
    }

    /// Waits for the next Ctrl-C.
    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            if self.signal.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
