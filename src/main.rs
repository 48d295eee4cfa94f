//! `image-relay`: parse arguments, start logging, run the command.

use std::process::ExitCode;

use clap::Parser;
use image_relay::cli::{Cli, Command, LogFormatArg};
use image_relay::telemetry::LogFormat;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (format, level, one_thread) = match &cli.command {
        Command::Copy(a) => (LogFormat::Text, if a.quiet { "warn" } else { "info" }, true),
        Command::Serve(a) => {
            let json = match a.log_format {
                LogFormatArg::Json => true,
                LogFormatArg::Text => false,
                LogFormatArg::Auto => !std::io::IsTerminal::is_terminal(&std::io::stderr()),
            };
            (
                if json {
                    LogFormat::Json
                } else {
                    LogFormat::Text
                },
                "info",
                false,
            )
        }
        Command::Rules(_) | Command::Plan(_) => (LogFormat::Text, "warn", true),
        Command::Sync(_) => (LogFormat::Text, "warn", false),
    };
    image_relay::telemetry::init_logging(format, level);
    tune_allocator();
    // `copy` runs on one thread. A blob stream hops source connection -> hasher -> target
    // connection for every chunk; across worker threads each hop is a futex wake-up and a
    // context switch (17k per GiB measured), and on a small machine the registries need those
    // cores more than we do. One thread moved 1 GiB with 30% less CPU and less wall time
    // (docs/BENCHMARKS.md). `serve` answers many deliveries at once and uses every core.
    let mut builder = if one_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(image_relay::cli::EXIT_USAGE);
        }
    };
    runtime.block_on(image_relay::cli::run(cli))
}

/// Blob streams allocate and free read buffers of a few hundred KiB continuously. glibc hands
/// such memory back to the kernel (madvise, trim) and faults it in again on the next read:
/// tens of thousands of page faults per GiB. Keeping freed memory in the allocator costs a few
/// MiB of RSS and saves that work.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
