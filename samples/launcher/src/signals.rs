// SPDX-License-Identifier: GPL-2.0

//! Timeout and interrupt handling: a signal sets a flag and the run structure's
//! `immediate_exit`, so a RUN in progress returns with EINTR and the next one returns at once.
//! The same mechanism, with its own signal ([`KICK_SIGNAL`]) from a CLOCK_MONOTONIC timer,
//! brings the vCPU out of the guest when an emulated timer expires, and the run loop sleeps
//! for a halted guest in `ppoll` with these signals unblocked only inside the call.

use crate::runloop::{Outcome, Waiter};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Signal of the vCPU kick timer.
pub const KICK_SIGNAL: libc::c_int = libc::SIGUSR1;

/// The kick timer (a `timer_t`), created by `arm`.
static KICK_TIMER: Mutex<Option<usize>> = Mutex::new(None);

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

extern "C" fn on_kick(_: libc::c_int) {
    let p = IMMEDIATE_EXIT.load(Ordering::SeqCst);
    if !p.is_null() {
        // SAFETY: as in `on_signal`.
        unsafe { p.write_volatile(1) };
    }
}

/// Installs the handlers (no SA_RESTART, so RUN is interrupted), creates the kick timer and
/// starts the timeout. Called on the thread that runs the vCPU, which the kick timer signals.
pub fn arm(immediate_exit: *mut u8, timeout: Option<Duration>) -> io::Result<()> {
    IMMEDIATE_EXIT.store(immediate_exit, Ordering::SeqCst);
    for sig in [libc::SIGALRM, libc::SIGINT, libc::SIGTERM, KICK_SIGNAL] {
        let handler: extern "C" fn(libc::c_int) = if sig == KICK_SIGNAL {
            on_kick
        } else {
            on_signal
        };
        // SAFETY: a zeroed sigaction with a valid handler and empty mask is well formed.
        let r = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    create_kick_timer()?;
    if let Some(t) = timeout {
        set_timer(t)?;
    }
    Ok(())
}

fn create_kick_timer() -> io::Result<()> {
    let mut slot = KICK_TIMER.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_some() {
        return Ok(());
    }
    // SAFETY: a zeroed sigevent is valid; we fill in notify, signal and thread.
    let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
    // To this thread, the one that runs the vCPU: a signal taken by another thread (the
    // serial input reader) would not interrupt KVM_RUN/SHADOWVM_RUN.
    sev.sigev_notify = libc::SIGEV_THREAD_ID;
    sev.sigev_signo = KICK_SIGNAL;
    // SAFETY: gettid has no preconditions.
    sev.sigev_notify_thread_id = unsafe { libc::gettid() };
    let mut id: libc::timer_t = std::ptr::null_mut();
    // SAFETY: valid pointers to a sigevent and a timer_t.
    if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut id) } != 0 {
        return Err(io::Error::last_os_error());
    }
    *slot = Some(id as usize);
    Ok(())
}

/// Arms the kick timer for `deadline` (CLOCK_MONOTONIC ns; None disarms): a RUN still in
/// the guest then returns.
pub fn set_kick(deadline: Option<u64>) -> io::Result<()> {
    let Some(id) = *KICK_TIMER.lock().unwrap_or_else(|e| e.into_inner()) else {
        return Ok(());
    };
    // 0 would disarm: a deadline at 0 is long past, so 1 ns fires as soon.
    let ns = deadline.map_or(0, |d| d.max(1));
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: (ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (ns % 1_000_000_000) as libc::c_long,
        },
    };
    // SAFETY: `id` came from timer_create and is deleted only by `disarm`.
    let r = unsafe {
        libc::timer_settime(
            id as libc::timer_t,
            libc::TIMER_ABSTIME,
            &spec,
            std::ptr::null_mut(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Lets the next RUN enter the guest again after a kick. A signal arriving after this still
/// sets `immediate_exit`, so none is lost.
pub fn clear_immediate_exit() {
    let p = IMMEDIATE_EXIT.load(Ordering::SeqCst);
    if !p.is_null() {
        // SAFETY: as in `on_signal`.
        unsafe { p.write_volatile(0) };
    }
}

/// Sleeps until `deadline` (CLOCK_MONOTONIC ns; None: until a signal) or a timeout or
/// interrupt signal. The signals are blocked while the flags are checked and unblocked only
/// inside `ppoll`, so one arriving in between is not missed.
pub fn sleep_until(deadline: Option<u64>, now: u64) {
    // SAFETY: sigset operations on local, initialised sets; sigprocmask and ppoll get valid
    // pointers.
    unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        for sig in [libc::SIGALRM, libc::SIGINT, libc::SIGTERM, KICK_SIGNAL] {
            libc::sigaddset(&mut block, sig);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &block, &mut old);
        if pending().is_none() {
            let ts = deadline.map(|d| {
                let ns = d.saturating_sub(now);
                libc::timespec {
                    tv_sec: (ns / 1_000_000_000) as libc::time_t,
                    tv_nsec: (ns % 1_000_000_000) as libc::c_long,
                }
            });
            let mut unblocked = old;
            for sig in [libc::SIGALRM, libc::SIGINT, libc::SIGTERM, KICK_SIGNAL] {
                libc::sigdelset(&mut unblocked, sig);
            }
            libc::ppoll(
                std::ptr::null_mut(),
                0,
                ts.as_ref().map_or(std::ptr::null(), |t| t as *const _),
                &unblocked,
            );
        }
        libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
}

/// The run loop's waiting, on the real signals and clock.
#[derive(Default)]
pub struct SignalWaiter {
    /// The kick deadline set last, to skip redundant timer_settime calls.
    armed: Option<u64>,
}

impl Waiter for SignalWaiter {
    fn kick_at(&mut self, deadline: Option<u64>) {
        if deadline != self.armed {
            self.armed = deadline;
            if let Err(e) = set_kick(deadline) {
                eprintln!("shadowvm-run: warning: cannot arm the vCPU kick timer: {e}");
            }
        }
    }
    fn after_run(&mut self) {
        clear_immediate_exit();
    }
    fn sleep_until(&mut self, deadline: Option<u64>, now: u64) {
        sleep_until(deadline, now);
    }
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

/// Stops the timers and forgets the run structure.
pub fn disarm() {
    let _ = set_timer_off();
    if let Some(id) = KICK_TIMER.lock().unwrap_or_else(|e| e.into_inner()).take() {
        // SAFETY: `id` came from timer_create and is deleted once (taken out of the slot).
        unsafe { libc::timer_delete(id as libc::timer_t) };
    }
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
