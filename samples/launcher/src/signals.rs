// SPDX-License-Identifier: GPL-2.0

//! Timeout and interrupt handling: a signal sets a flag and the run structure's
//! `immediate_exit`, so a RUN in progress returns with EINTR and the next one returns at once.

use crate::runloop::Outcome;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::time::Duration;

static TIMED_OUT: AtomicBool = AtomicBool::new(false);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static IMMEDIATE_EXIT: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe work: atomics and one volatile byte store.
    if sig == libc::SIGALRM {
        TIMED_OUT.store(true, Ordering::SeqCst);
    } else {
        INTERRUPTED.store(true, Ordering::SeqCst);
    }
    let p = IMMEDIATE_EXIT.load(Ordering::SeqCst);
    if !p.is_null() {
        // SAFETY: `p` points into the backend's run mapping, which outlives the handlers
        // (`disarm` clears it before the backend is dropped).
        unsafe { p.write_volatile(1) };
    }
}

/// Installs the handlers (no SA_RESTART, so RUN is interrupted) and starts the timer.
pub fn arm(immediate_exit: *mut u8, timeout: Option<Duration>) -> io::Result<()> {
    IMMEDIATE_EXIT.store(immediate_exit, Ordering::SeqCst);
    for sig in [libc::SIGALRM, libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a valid handler and empty mask is well formed.
        let r = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    if let Some(t) = timeout {
        set_timer(t)?;
    }
    Ok(())
}

fn set_timer(t: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    // Never zero, which would disarm instead.
    let tv = if tv.tv_sec == 0 && tv.tv_usec == 0 {
        libc::timeval {
            tv_sec: 0,
            tv_usec: 1,
        }
    } else {
        tv
    };
    let it = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: tv,
    };
    // SAFETY: plain syscall with valid pointers.
    if unsafe { libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Stops the timer and forgets the run structure.
pub fn disarm() {
    let _ = set_timer_off();
    IMMEDIATE_EXIT.store(std::ptr::null_mut(), Ordering::SeqCst);
}

fn set_timer_off() -> io::Result<()> {
    let zero = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let it = libc::itimerval {
        it_interval: zero,
        it_value: zero,
    };
    // SAFETY: as in `set_timer`.
    if unsafe { libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The stop condition for the run loop.
pub fn pending() -> Option<Outcome> {
    if TIMED_OUT.load(Ordering::SeqCst) {
        Some(Outcome::Timeout)
    } else if INTERRUPTED.load(Ordering::SeqCst) {
        Some(Outcome::Interrupted)
    } else {
        None
    }
}
