//! The native allocator. burn's CPU backend allocates and frees every activation of a training
//! step. glibc's malloc and mimalloc's defaults hand freed blocks back to the OS, and the
//! kernel then zeroes fresh pages on the next step (`clear_page` was a large share of a step's
//! profile; figures in docs/measurements.md). mimalloc is told to keep what was freed: peak
//! memory is unchanged; memory is not returned to the OS between steps.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the mimalloc (v3) that libmimalloc-sys builds; the crate has no
/// constant for it.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory for reuse instead of returning it to the OS. Call first thing in a
/// native binary's `main`.
pub fn keep_freed_memory() {
    // SAFETY: sets one option; called before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn purge_delay_is_the_option_we_set() {
        // SAFETY: reads one option.
        let get = || unsafe { libmimalloc_sys::mi_option_get(super::PURGE_DELAY) };
        // The default purge delay of this mimalloc (1000 ms, its src/options.c) identifies the
        // option's index.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(get(), 1000);
        }
        super::keep_freed_memory();
        assert_eq!(get(), -1);
    }
}
