//! How many GPU kernels (compute pipelines) this process has built: cubecl logs each kernel it
//! compiles (autotune's candidates included) and forwards that line to the `log` crate, where
//! [`KernelLog`] counts it. A pipeline built in the middle of an epoch stalls that step for as
//! long as the driver compiles it, so a run reports how many each epoch built (none after its
//! preparation, where it went right). The same on native wgpu and in the browser's worker.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use burn::cubecl::config::compilation::CompilationLogLevel;
use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};

/// The target cubecl's compilation log lines carry.
const TARGET: &str = "cubecl::compilation";

static BUILT: AtomicU64 = AtomicU64::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

/// Counts cubecl's compilation lines; everything else logged is dropped, as without a logger.
struct KernelLog;

impl log::Log for KernelLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.target() == TARGET
    }

    fn log(&self, record: &log::Record) {
        if record.target() == TARGET {
            let n = BUILT.fetch_add(1, Ordering::Relaxed) + 1;
            // Which kernel it was, for whoever hunts a kernel built mid-run (native only).
            #[cfg(not(target_family = "wasm"))]
            if std::env::var_os("PCL_LOG_KERNELS").is_some() {
                eprintln!("\rkernel {n}: {}", record.args());
            }
            #[cfg(target_family = "wasm")]
            let _ = n;
        }
    }

    fn flush(&self) {}
}

/// Turns the counter on; call it before the first GPU device is created (cubecl reads its
/// configuration once). Whether counting is on: false when cubecl's configuration was already
/// read or another logger is installed.
pub fn count() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let mut config = CubeClRuntimeConfig::default();
        config.compilation.logger.level = CompilationLogLevel::Basic;
        config.compilation.logger.log = Some(Default::default());
        if !CubeClRuntimeConfig::try_set(config) || log::set_logger(&KernelLog).is_err() {
            return false;
        }
        // cubecl logs compilations at Info; below it, wgpu would call the logger for every command.
        log::set_max_level(log::LevelFilter::Info);
        COUNTING.store(true, Ordering::Relaxed);
        true
    })
}

/// Kernels built so far in this process; `None` when counting is off.
pub fn built() -> Option<u64> {
    COUNTING
        .load(Ordering::Relaxed)
        .then(|| BUILT.load(Ordering::Relaxed))
}

/// [`built`] once cubecl's log has caught up with the device: the log reaches the counter
/// through a channel (drained by a thread natively, by a task in the browser), so a kernel
/// built a moment ago may not be counted yet. Flushes `device`'s queued work (building its
/// kernels), then looks until two looks a turn apart agree (a few milliseconds at most).
pub async fn settled(device: &burn::prelude::Device) -> Option<u64> {
    built()?;
    let _ = device.flush();
    let mut last = built();
    for _ in 0..50 {
        turn().await;
        let now = built();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// Lets the log's drain run: a task in the browser (this future goes to the back of the
/// queue once), a thread natively (a millisecond's sleep).
async fn turn() {
    #[cfg(not(target_family = "wasm"))]
    std::thread::sleep(std::time::Duration::from_millis(1));
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}
