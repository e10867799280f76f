//! How the process's heap treats the large blocks registration allocates and frees again and
//! again (warped images, window sums, gradients: tens of MB each, every evaluation of the
//! energy).
//!
//! glibc's malloc serves blocks above 128 kB (adaptively up to 32 MB) with a fresh `mmap` and
//! unmaps them when freed, so each evaluation faults every page of every buffer in again. On the
//! 2-core VM this project is measured on that was 27–34 s of a registration's 174–230 s of CPU
//! time (page faults are expensive under virtualisation); with large blocks kept in the heap and
//! the heap never trimmed, the next evaluation reuses the same memory and it is 2 s. The peak
//! resident memory barely changes (3.40 GB on a 400×400×250 pair, with the slopes the warp now
//! keeps; 3.35 GB before); what the process has freed is kept until it exits.

/// Serve large blocks from the heap and keep freed memory for reuse (glibc on Linux; elsewhere
/// nothing changes). Call once, early in `main`, before other threads start; for a process
/// that runs one job and exits (the command line), since freed memory is not given back.
pub fn keep_freed_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets malloc's tuning parameters; it is called before other threads
    // allocate.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
