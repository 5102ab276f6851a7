//! Diagnostics on stderr through the `log` crate: herdtrace's own records
//! and the eBPF programs' (aya-log), off unless asked for with `-v` or
//! `--log-level`. The level also decides, at load time, which kernel-side
//! log statements run at all (see `loader`): when off, none writes a record.
use std::io::Write;

use log::LevelFilter;

#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct LogArgs {
    /// Show diagnostics on stderr, including what the eBPF programs report
    /// (a failed kernel read, a full map): -v warnings, -vv info, -vvv
    /// debug, -vvvv trace.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Diagnostics level: off, error, warn, info, debug or trace (instead of -v).
    #[arg(
        long,
        value_name = "LEVEL",
        value_parser = parse_level,
        conflicts_with = "verbose"
    )]
    pub log_level: Option<LevelFilter>,
}

impl LogArgs {
    /// The level asked for: `--log-level`, else one step per `-v`, else off.
    pub fn level(&self) -> LevelFilter {
        self.log_level.unwrap_or(match self.verbose {
            0 => LevelFilter::Off,
            1 => LevelFilter::Warn,
            2 => LevelFilter::Info,
            3 => LevelFilter::Debug,
            _ => LevelFilter::Trace,
        })
    }
}

fn parse_level(s: &str) -> Result<LevelFilter, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a log level (off, error, warn, info, debug, trace)"))
}

/// Starts the logger at the level `args` asks for (once per process; a
/// second call changes nothing).
pub fn init(args: &LogArgs) {
    let level = args.level();
    let _ = env_logger::Builder::new()
        .filter_level(level)
        .target(env_logger::Target::Stderr)
        .format(|buf, record| {
            writeln!(
                buf,
                "herdtrace: {} {}: {}",
                record.level(),
                record.target(),
                record.args()
            )
        })
        .try_init();
}

/// The aya-log level the eBPF programs log at: 0 (none) for off, then
/// error = 1 up to trace = 5, as `aya_log_common::Level` numbers them.
pub fn kernel_level(level: LevelFilter) -> u8 {
    match level {
        LevelFilter::Off => 0,
        LevelFilter::Error => 1,
        LevelFilter::Warn => 2,
        LevelFilter::Info => 3,
        LevelFilter::Debug => 4,
        LevelFilter::Trace => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        log: LogArgs,
    }

    fn level(args: &[&str]) -> Result<LevelFilter, clap::Error> {
        Cli::try_parse_from(std::iter::once("herdtrace").chain(args.iter().copied()))
            .map(|c| c.log.level())
    }

    #[test]
    fn off_by_default_and_one_step_per_v() {
        assert_eq!(level(&[]).expect("ok"), LevelFilter::Off);
        assert_eq!(level(&["-v"]).expect("ok"), LevelFilter::Warn);
        assert_eq!(level(&["-vv"]).expect("ok"), LevelFilter::Info);
        assert_eq!(level(&["-v", "-v", "-v"]).expect("ok"), LevelFilter::Debug);
        assert_eq!(level(&["-vvvv"]).expect("ok"), LevelFilter::Trace);
        assert_eq!(level(&["-vvvvvvv"]).expect("ok"), LevelFilter::Trace);
        assert_eq!(level(&["--verbose"]).expect("ok"), LevelFilter::Warn);
    }

    #[test]
    fn every_level_name_is_read_and_nothing_else() {
        for (name, want) in [
            ("off", LevelFilter::Off),
            ("error", LevelFilter::Error),
            ("warn", LevelFilter::Warn),
            ("info", LevelFilter::Info),
            ("debug", LevelFilter::Debug),
            ("trace", LevelFilter::Trace),
            ("DEBUG", LevelFilter::Debug),
        ] {
            assert_eq!(level(&["--log-level", name]).expect(name), want);
        }
        for bad in ["", "loud", "6", "warning"] {
            let err = level(&["--log-level", bad]).expect_err(bad);
            assert!(err.to_string().contains("is not a log level"), "{err}");
        }
        // One way to say it at a time.
        assert!(level(&["-v", "--log-level", "info"]).is_err());
    }

    #[test]
    fn kernel_levels_follow_aya_log_numbering() {
        use aya_log::Level;
        assert_eq!(kernel_level(LevelFilter::Off), 0);
        for (filter, aya) in [
            (LevelFilter::Error, Level::Error),
            (LevelFilter::Warn, Level::Warn),
            (LevelFilter::Info, Level::Info),
            (LevelFilter::Debug, Level::Debug),
            (LevelFilter::Trace, Level::Trace),
        ] {
            assert_eq!(kernel_level(filter), aya as u8, "{filter}");
        }
    }
}
