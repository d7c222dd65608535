//! Running a user's command for `baton lock|elect|watch`: with extra variables in its
//! environment and the terminal inherited; stopped with SIGTERM, then SIGKILL after a grace,
//! when what it runs under is lost; its exit status passed on as a shell would report it.

use std::process::{ExitCode, ExitStatus};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};
use tracing::warn;

use super::session::Session;

/// Starts `argv` with `env` added to baton's own environment.
pub(crate) fn spawn(argv: &[String], env: &[(&str, String)]) -> Result<Child> {
    let Some((program, args)) = argv.split_first() else {
        bail!("no command given after --");
    };
    Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .spawn()
        .with_context(|| format!("starting {program}"))
}

/// SIGTERM, then SIGKILL if it has not exited within `grace`; returns how it ended.
pub(crate) async fn stop(child: &mut Child, grace: Duration) -> Result<ExitStatus> {
    terminate(child);
    if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
        return Ok(status?);
    }
    warn!("the command outlived its {grace:?} grace after SIGTERM; sending SIGKILL");
    child.kill().await.context("killing the command")?;
    Ok(child.wait().await?)
}

#[cfg(target_os = "linux")]
fn terminate(child: &mut Child) {
    use rustix::process::{Pid, Signal, kill_process};
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw);
    // None: already reaped, nothing to stop.
    if let Some(pid) = pid
        && let Err(e) = kill_process(pid, Signal::TERM)
    {
        warn!("sending SIGTERM to the command: {e}");
    }
}

/// Without a portable SIGTERM here, the grace is skipped.
#[cfg(not(target_os = "linux"))]
fn terminate(child: &mut Child) {
    if let Err(e) = child.start_kill() {
        warn!("killing the command: {e}");
    }
}

/// The status a shell reports: the exit code, or 128 plus the signal that ended it.
pub(crate) fn exit_code(status: ExitStatus) -> ExitCode {
    ExitCode::from(status_number(status))
}

fn status_number(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code & 0xff).unwrap_or(1);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return u8::try_from(128 + (signal & 0x7f)).unwrap_or(1);
        }
    }
    1
}

/// How a command run under a session ended.
pub(crate) enum Ended {
    /// It exited on its own.
    Exited(ExitStatus),
    /// Baton was interrupted and stopped it (None: there was no command, only a hold).
    Interrupted(Option<ExitStatus>),
    /// The session's lease was lost and the command was stopped.
    Lost(String),
}

/// Runs `argv` while `session` lasts, or, with no command, holds until interrupted. A lost
/// lease or an interrupt stops the command (`stop`).
pub(crate) async fn run_in_session(
    session: &Session,
    argv: &[String],
    env: &[(&str, String)],
    grace: Duration,
    interrupts: &mut Interrupts,
) -> Result<Ended> {
    if argv.is_empty() {
        return Ok(tokio::select! {
            reason = session.lost() => Ended::Lost(reason),
            () = interrupts.next() => Ended::Interrupted(None),
        });
    }
    let mut child = spawn(argv, env)?;
    tokio::select! {
        status = child.wait() => Ok(Ended::Exited(status?)),
        reason = session.lost() => {
            let status = stop(&mut child, grace).await?;
            Ok(Ended::Lost(format!("{reason}; the command was stopped ({status})")))
        }
        () = interrupts.next() => Ok(Ended::Interrupted(Some(stop(&mut child, grace).await?))),
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, so a command can clean up before baton exits.
pub(crate) struct Interrupts {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Interrupts {
    /// Takes both signals over from their default (exit at once) from now on.
    pub(crate) fn catch() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                terminate: signal(SignalKind::terminate()).context("catching SIGTERM")?,
                interrupt: signal(SignalKind::interrupt()).context("catching SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    pub(crate) async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::status_number;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    #[test]
    fn statuses_read_as_a_shell_reports_them() {
        assert_eq!(status_number(ExitStatus::from_raw(0)), 0);
        assert_eq!(status_number(ExitStatus::from_raw(3 << 8)), 3);
        // Killed by SIGTERM (15): 143, as `sh -c 'kill $$'; echo $?` prints.
        assert_eq!(status_number(ExitStatus::from_raw(15)), 143);
    }
}
