//! A timerfd ticker for Linux: the kernel wakes the agent once per tick, where a tokio
//! interval of seconds costs three or four wakeups (see [`crate::agent::ticker`]). At the
//! default 5 s interval this is most of the agent's idle CPU. [`crate::agent::run_system`]
//! uses it, and falls back to the tokio interval when no timerfd can be made.
//!
//! The only `unsafe` in the agent: creating, arming and registering the descriptor, each
//! block with its SAFETY argument.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Fires at once, then every period (a periodic `CLOCK_MONOTONIC` timerfd). Missed ticks
/// collapse into one, like the interval's `Delay` behaviour. Should reading the timer
/// ever fail, it carries on with a tokio interval.
pub struct TimerFdTicker {
    fd: AsyncFd<File>,
    period: Duration,
    fallback: Option<tokio::time::Interval>,
}

impl TimerFdTicker {
    /// Arms the timer; needs to run inside the tokio runtime (it registers the fd).
    pub fn new(period: Duration) -> io::Result<Self> {
        // SAFETY: timerfd_create takes no pointers; on success it returns a new descriptor
        // that nothing else owns, which OwnedFd then closes exactly once.
        #[allow(unsafe_code)]
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a valid descriptor we just created and own (see above).
        #[allow(unsafe_code)]
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let every = timespec(period);
        // The first expiry 1 ns from now (zero would disarm it): the first tick is at once.
        let spec = libc::itimerspec {
            it_interval: every,
            it_value: libc::timespec {
                tv_sec: 0,
                tv_nsec: 1,
            },
        };
        // SAFETY: `spec` lives for the call and the old value pointer may be null.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::timerfd_settime(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                0,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the File owns the descriptor, which stays open and the same for as long
        // as the AsyncFd holds the File.
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register_with_interest(File::from(fd), Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self {
            fd,
            period,
            fallback: None,
        })
    }

    async fn next(&mut self) -> io::Result<()> {
        let mut expirations = [0u8; 8];
        loop {
            let mut ready = self.fd.readable_mut().await?;
            // Reading the 8-byte expiration count re-arms readiness; WouldBlock (a
            // spurious wakeup) clears it and waits again.
            match ready.try_io(|fd| fd.get_mut().read(&mut expirations)) {
                Ok(result) => {
                    // One read takes every expiry, so the timer is not readable until the
                    // next one: saying so spares the next call a read that would block.
                    ready.clear_ready();
                    return result.map(drop);
                }
                Err(_would_block) => continue,
            }
        }
    }
}

impl crate::agent::Ticker for TimerFdTicker {
    async fn tick(&mut self) {
        if let Some(interval) = self.fallback.as_mut() {
            interval.tick().await;
        } else if let Err(e) = self.next().await {
            // Not expected from a valid timerfd: never spin on it.
            tracing::warn!("timerfd read failed ({e}): pacing samples with a tokio interval");
            self.fallback = Some(crate::agent::ticker::interval(self.period));
        }
    }
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        // c_long is 32 bits on some targets; nanoseconds always fit.
        #[allow(clippy::unnecessary_fallible_conversions)]
        tv_nsec: libc::c_long::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::TimerFdTicker;
    use crate::agent::Ticker;

    /// The timerfd ticker fires at once, then once per period and never sooner: four ticks
    /// of a 100 ms timer take at least 300 ms (the kernel never fires a timer early).
    #[test]
    fn timerfd_ticks_at_once_then_every_period() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let period = Duration::from_millis(100);
            let mut ticker = TimerFdTicker::new(period).unwrap();
            let start = Instant::now();
            let deadline = Duration::from_secs(5);
            tokio::time::timeout(deadline, ticker.tick()).await.unwrap();
            assert!(
                start.elapsed() < period / 2,
                "first tick took {:?}",
                start.elapsed()
            );
            for _ in 0..3 {
                tokio::time::timeout(deadline, ticker.tick()).await.unwrap();
            }
            let took = start.elapsed();
            assert!(
                took >= period * 3 - Duration::from_millis(5),
                "4 ticks in {took:?}"
            );
        });
    }

    /// A tick whose future is dropped before it completes (it lost a `select!`) is not lost:
    /// the next call still completes by the next expiry.
    #[test]
    fn timerfd_tick_survives_cancellation() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let period = Duration::from_millis(50);
            let mut ticker = TimerFdTicker::new(period).unwrap();
            ticker.tick().await; // the immediate one
            // Normally dropped unfinished (the next expiry is 50 ms away); on a machine too
            // busy to run us for 50 ms it may complete instead, which is fine too.
            let _ = tokio::time::timeout(Duration::from_millis(1), ticker.tick()).await;
            tokio::time::timeout(Duration::from_secs(5), ticker.tick())
                .await
                .unwrap();
        });
    }
}
