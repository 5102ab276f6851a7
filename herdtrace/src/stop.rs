//! Ctrl-C, SIGTERM and SIGHUP end a trace cleanly: the trace session waits
//! for them with tokio ([`Signals`]), sees them, prints the summary and drops
//! the tracer, which detaches every probe. A signal that comes between two
//! sessions (`herdtrace demo` runs several) is kept by [`install`]'s handler
//! and ends the next session at once.
use std::sync::{
    atomic::{AtomicI32, Ordering},
    Once,
};

use anyhow::{bail, Context as _, Result};
use tokio::signal::unix::{signal, Signal, SignalKind};

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// Installs the recording handlers, once. tokio's own handlers, registered
/// later by [`Signals::new`], call the handler they replace, so the signal
/// is recorded whether a session is running or not.
pub fn install() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| result = install_handlers());
    result
}

fn install_handlers() -> Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores into an atomic (async-signal-safe).
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            bail!(
                "installing the handler for signal {sig}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// The signal that asked us to stop, if any.
pub fn requested() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The stop signals as the trace session's event loop sees them.
pub struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    /// Registers with the current tokio runtime (call it inside one).
    pub fn new() -> Result<Signals> {
        let listen = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("listening for {name}"))
        };
        Ok(Signals {
            int: listen(SignalKind::interrupt(), "SIGINT")?,
            term: listen(SignalKind::terminate(), "SIGTERM")?,
            hup: listen(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// The next stop signal; it is also recorded for [`requested`].
    pub async fn recv(&mut self) -> i32 {
        let sig = tokio::select! {
            Some(()) = self.int.recv() => libc::SIGINT,
            Some(()) = self.term.recv() => libc::SIGTERM,
            Some(()) = self.hup.recv() => libc::SIGHUP,
            // The runtime is shutting down: no signal can come any more.
            else => std::future::pending().await,
        };
        SIGNAL.store(sig, Ordering::SeqCst);
        sig
    }
}

/// A panic prints one line (what and where) instead of Rust's two-line
/// report; unwinding then drops the tracer, which detaches every probe.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "herdtrace: internal error: {}{at} (a bug; probes are being detached)",
            what.replace('\n', " ")
        );
    }));
}
