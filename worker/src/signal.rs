//! Stop signals: SIGTERM (sent by Kubernetes and by the local executor on
//! cancel) and SIGINT (Ctrl-C).
//!
//! A stopped worker writes its last progress with a message saying it was
//! stopped, writes no `result.json`, and exits with 128 plus the signal number,
//! so a stopped job never reads as a success.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// A signal that requests the worker to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM.
    Terminate,
    /// SIGINT.
    Interrupt,
}

impl StopSignal {
    /// Returns the conventional signal name, such as `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Interrupt => "SIGINT",
        }
    }

    /// Returns the signal number.
    pub fn number(self) -> i32 {
        match self {
            StopSignal::Terminate => 15,
            StopSignal::Interrupt => 2,
        }
    }

    /// Returns the exit code of a process stopped by this signal: 143 or 130.
    pub fn exit_code(self) -> u8 {
        128 + self.number() as u8
    }

    /// Returns the progress message that records the stop.
    pub fn stop_message(self) -> String {
        format!("stopped by {} before finishing", self.name())
    }
}

/// Listeners for SIGTERM and SIGINT.
///
/// Creating them replaces the default action (exit at once), so create them
/// before the work starts; from then on the signals only wake [`StopSignals::recv`].
#[derive(Debug)]
pub struct StopSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl StopSignals {
    /// Installs the listeners; must be called inside a tokio runtime.
    pub fn install() -> std::io::Result<StopSignals> {
        Ok(StopSignals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.terminate.recv() => StopSignal::Terminate,
            _ = self.interrupt.recv() => StopSignal::Interrupt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_shell_convention() {
        assert_eq!(StopSignal::Terminate.exit_code(), 143);
        assert_eq!(StopSignal::Interrupt.exit_code(), 130);
    }
}
