//! What a long-running lanmon process needs from the operating system: the shutdown signals
//! (SIGINT and SIGTERM, a second one exits at once) and the open-files limit (one descriptor
//! per agent connection). Used by the `server`, `agent` and `loadgen` binaries and by tests.

/// Waits for Ctrl+C (SIGINT) or SIGTERM; returns the signal's name. After it returns, a second
/// signal ends the process at once (exit code 130), so a hung shutdown can always be cut short.
/// Both signals count because a process started with `&` from a script has SIGINT ignored.
/// Must run inside a tokio runtime with signals enabled (the actix `System` has them).
pub async fn shutdown_signal() -> &'static str {
    let name = wait_signal().await;
    tokio::spawn(async {
        let second = wait_signal().await;
        eprintln!("{second} again: exiting now");
        std::process::exit(130);
    });
    name
}

#[cfg(unix)]
async fn wait_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Cannot install handlers (should not happen): never resolve, default handling applies.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

#[cfg(not(unix))]
async fn wait_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl+C"
}

/// This process's open-files limit (`RLIMIT_NOFILE`): `(soft, hard)`. Where there is no such
/// limit (not Unix), both are `u64::MAX`.
#[cfg(unix)]
pub fn fd_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass, which lives for the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not on every Unix
    Ok((lim.rlim_cur as u64, lim.rlim_max as u64))
}

/// See the Unix version: there is no such limit here.
#[cfg(not(unix))]
pub fn fd_limit() -> std::io::Result<(u64, u64)> {
    Ok((u64::MAX, u64::MAX))
}

/// Raises the soft open-files limit to `want`, capped at the hard limit, if it is lower (it
/// is never lowered; `u64::MAX` means "as high as allowed"). Returns the soft limit now in
/// force. Only root can raise the hard limit, so that is left alone.
#[cfg(unix)]
pub fn raise_fd_limit(want: u64) -> std::io::Result<u64> {
    let (soft, hard) = fd_limit()?;
    let new = want.min(hard);
    if new <= soft {
        return Ok(soft);
    }
    let lim = libc::rlimit {
        rlim_cur: new as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit only reads the struct we pass, which lives for the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(new)
}

/// See the Unix version: there is no such limit here.
#[cfg(not(unix))]
pub fn raise_fd_limit(_want: u64) -> std::io::Result<u64> {
    Ok(u64::MAX)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// Lowers the soft limit (tests only: nothing else may lower it).
    fn set_soft_limit(soft: u64, hard: u64) -> std::io::Result<()> {
        let lim = libc::rlimit {
            rlim_cur: soft as libc::rlim_t,
            rlim_max: hard as libc::rlim_t,
        };
        // SAFETY: setrlimit only reads the struct we pass, which lives for the call.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Asking for no more than the soft limit changes nothing; asking for more raises the soft
    /// limit (capped at the hard one) and never touches the hard limit.
    #[test]
    fn fd_limit_is_raised_never_lowered() -> std::io::Result<()> {
        let (_, hard) = fd_limit()?;
        // Start below the hard limit (by a little: other tests run in this process).
        let soft = hard.min(1 << 20).saturating_sub(2);
        set_soft_limit(soft, hard)?;
        assert_eq!(raise_fd_limit(0)?, soft);
        assert_eq!(raise_fd_limit(soft)?, soft);
        assert_eq!(fd_limit()?, (soft, hard));
        assert_eq!(raise_fd_limit(soft + 1)?, soft + 1);
        assert_eq!(fd_limit()?, (soft + 1, hard));
        // An unlimited hard limit cannot be the soft limit (Linux caps it at `nr_open`).
        if hard != u64::MAX {
            assert_eq!(raise_fd_limit(u64::MAX)?, hard);
            assert_eq!(fd_limit()?, (hard, hard));
        }
        Ok(())
    }
}
