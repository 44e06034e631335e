//! Stopping on SIGINT (Ctrl-C) or SIGTERM (`kill`, a service manager) for commands that must
//! clean up first: a command that started validator processes stops them (they would
//! otherwise outlive it), and a benchmark prints what it measured until then.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGINT and SIGTERM, caught from [`Stop::catch`] on. Neither ends the process by itself
/// any more: a command that catches them waits on [`Stop::received`] wherever it waits.
#[derive(Debug)]
pub struct Stop {
    interrupt: Signal,
    terminate: Signal,
}

impl Stop {
    /// Catches SIGINT and SIGTERM from now on; one that arrives before anything waits is
    /// kept for the first wait.
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
}
