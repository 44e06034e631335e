//! Stopping on SIGINT (Ctrl-C) or SIGTERM (`kill`, a service manager) for commands that must
//! clean up first: a command that started validator processes stops them (they would
//! otherwise outlive it), and a benchmark prints what it measured until then.

use std::time::Duration;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// How long a command that failed waits for a signal that may explain the failure: Ctrl-C
/// in a terminal reaches the validators it started as it reaches the command, and their
/// going away can be seen first.
const EXPLAINS_A_FAILURE: Duration = Duration::from_millis(500);

/// SIGINT and SIGTERM, caught from [`Stop::catch`] on. Neither ends the process by itself
/// any more: one is kept until the command next asks ([`Stop::received`],
/// [`Stop::within`], [`Stop::unless`]), which the commands that catch them do at every wait, and their
/// long computations run beside such a wait.
#[derive(Debug)]
pub struct Stop {
    interrupt: Signal,
    terminate: Signal,
}

impl Stop {
    /// Catches SIGINT and SIGTERM from now on.
    pub fn catch(runtime: &tokio::runtime::Runtime) -> anyhow::Result<Stop> {
        let _context = runtime.enter();
        Ok(Stop {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for either signal; returns its name.
    pub async fn received(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }

    /// The signal received already or within `wait`, if any.
    pub async fn within(&mut self, wait: Duration) -> Option<&'static str> {
        tokio::time::timeout(wait, self.received()).await.ok()
    }

    /// What `work` gives, unless a signal comes first (`Err`, its name). A failure of
    /// `work` that a signal follows within [`EXPLAINS_A_FAILURE`] counts as that signal.
    pub async fn unless<T>(
        &mut self,
        work: impl Future<Output = anyhow::Result<T>>,
    ) -> Result<anyhow::Result<T>, &'static str> {
        tokio::select! {
            biased;
            signal = self.received() => Err(signal),
            done = work => match done {
                Err(e) => self.within(EXPLAINS_A_FAILURE).await.map_or(Ok(Err(e)), Err),
                done => Ok(done),
            },
        }
    }
}
