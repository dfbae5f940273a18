//! How a run is asked to stop: Ctrl-C (SIGINT) stops at the next step and keeps the last
//! epoch's checkpoint (exit 130); a preemption — SIGTERM, or SIGUSR1 as Slurm's
//! `--signal=B:USR1@120` sends it before a time limit or a preemption — finishes the current
//! training step, checkpoints the run there (mid-epoch) and exits with [`PREEMPTED_EXIT`], so
//! that a requeued job continues where this one stopped (docs/reliability.md).

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use anyhow::{Context, Result};

/// Set by the Ctrl-C handler; the run stops at the next step, its last checkpoint intact.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The preemption signal received (0: none).
static PREEMPTED: AtomicI32 = AtomicI32::new(0);

/// The exit code of a preempted run: 75 (`EX_TEMPFAIL`, "try again"), apart from errors (1),
/// usage errors (2) and Ctrl-C (130). The Slurm scripts requeue a task that exits with it.
pub const PREEMPTED_EXIT: u8 = 75;

/// The preemption signal received, by name.
pub fn preempted() -> Option<&'static str> {
    match PREEMPTED.load(Ordering::SeqCst) {
        0 => None,
        libc::SIGUSR1 => Some("SIGUSR1"),
        _ => Some("SIGTERM"),
    }
}

extern "C" fn on_preemption(signal: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    PREEMPTED.store(signal, Ordering::SeqCst);
}

/// Installs the Ctrl-C and preemption handlers (once per process).
pub fn install() -> Result<()> {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let mut installed = Ok(());
    ONCE.call_once(|| {
        installed = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler");
        for signal in [libc::SIGTERM, libc::SIGUSR1] {
            // SAFETY: `on_preemption` only stores into an atomic, which is async-signal-safe;
            // the `sigaction` struct is fully initialised (zeroed, then its handler and an
            // empty mask set) before the call, and no other code of ours handles these
            // signals.
            let failed = unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_preemption as extern "C" fn(libc::c_int) as usize;
                libc::sigemptyset(&mut action.sa_mask);
                action.sa_flags = libc::SA_RESTART;
                libc::sigaction(signal, &action, std::ptr::null_mut()) != 0
            };
            if failed && installed.is_ok() {
                installed = Err(std::io::Error::last_os_error())
                    .context("installing the SIGTERM/SIGUSR1 handler");
            }
        }
    });
    installed
}
