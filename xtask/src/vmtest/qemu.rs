//! Booting one kernel under QEMU (TCG) and streaming its serial console.
use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::console::{Console, Ending};

/// How long QEMU may take to exit after the result line (poweroff) or a fatal kernel line.
const GRACE: Duration = Duration::from_secs(20);

/// The QEMU command line. KVM aborts on these machines (MSR setup), so TCG;
/// `single_thread` runs the two vCPUs on one host thread.
pub fn qemu_command(vmlinuz: &Path, initrd: &Path, single_thread: bool) -> Command {
    let accel = if single_thread {
        "tcg,thread=single"
    } else {
        "tcg"
    };
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", accel, "-cpu", "max", "-m", "1G", "-smp", "2"])
        .args(["-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1"]);
    cmd
}

/// Result of one boot.
pub struct Boot {
    pub console: Console,
    pub ending: Ending,
    pub elapsed: Duration,
}

/// Boots, copying every console line to `log` and into a [`Console`], until
/// QEMU exits or `timeout` passes (then QEMU is killed).
pub fn boot(
    vmlinuz: &Path,
    initrd: &Path,
    single_thread: bool,
    log: &Path,
    timeout: Duration,
) -> anyhow::Result<Boot> {
    let mut cmd = qemu_command(vmlinuz, initrd, single_thread);
    println!("==> {}", crate::proc::display(&cmd));
    let mut log_file = File::create(log).with_context(|| format!("create {}", log.display()))?;
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().context("qemu stdout")?;
    let stderr = child.stderr.take().context("qemu stderr")?;
    for (stream, prefix) in [
        (Box::new(stdout) as Box<dyn std::io::Read + Send>, ""),
        (Box::new(stderr), "qemu: "),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']);
                if tx.send(format!("{prefix}{line}")).is_err() {
                    break;
                }
                buf.clear();
            }
        });
    }
    drop(tx);

    let mut console = Console::default();
    let mut deadline = start + timeout;
    let mut ending = Ending::Exited;
    loop {
        let now = Instant::now();
        if now >= deadline {
            // Only a boot that never reached a verdict counts as timed out.
            if console.verdict.is_none() && console.fatal.is_none() {
                ending = Ending::TimedOut(timeout.as_secs());
            }
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(line) => {
                writeln!(log_file, "{line}").context("write console log")?;
                let had_end = console.verdict.is_some() || console.fatal.is_some();
                console.feed(&line);
                if !had_end && (console.verdict.is_some() || console.fatal.is_some()) {
                    deadline = deadline.min(Instant::now() + GRACE);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            // Both pipes closed: QEMU has exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // Kill only the QEMU we started, by its handle; harmless if it already exited.
    let _ = child.kill();
    let status = child.wait().context("wait for qemu")?;
    writeln!(log_file, "# qemu exit: {status}").context("write console log")?;
    Ok(Boot {
        console,
        ending,
        elapsed: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(single_thread: bool) -> Vec<String> {
        qemu_command(Path::new("/k"), Path::new("/i"), single_thread)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn single_thread_tcg_only_when_asked() {
        let multi = args(false);
        assert_eq!(multi[..2], ["-accel", "tcg"]);
        let single = args(true);
        assert_eq!(single[..2], ["-accel", "tcg,thread=single"]);
        for a in [&multi, &single] {
            assert!(a.windows(2).any(|w| w == ["-smp", "2"]), "{a:?}");
            assert!(a.windows(2).any(|w| w == ["-kernel", "/k"]), "{a:?}");
        }
    }

    #[test]
    fn every_series_runs_single_threaded() {
        for s in super::super::kernel::SERIES {
            assert!(s.single_thread_tcg, "{}", s.name);
        }
    }
}
