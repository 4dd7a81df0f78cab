//! The native allocator. burn's CPU backend allocates and frees every activation of a training
//! step (tens of MiB per slice of images). glibc's malloc and mimalloc's defaults hand freed
//! blocks back to the OS, and the kernel then zeroes fresh pages on the next step: 28% of a
//! step's profile was `clear_page`. mimalloc told to keep what was freed: the training step
//! went from about 420 to about 520 img/s (README). Peak memory is unchanged; memory is not
//! returned to the OS between steps.

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
