//! Allocator tuning for training loops.
//!
//! Every training step allocates and frees the same multi-megabyte activation and gradient
//! buffers. glibc's defaults hand such blocks back to the kernel (mmap/munmap above a dynamic
//! threshold, heap trimming below it), so the next step pays a page fault and a page clear for
//! every 4 KiB it touches again. [`retain_freed_memory`] keeps freed blocks in the process.

/// Keeps freed memory for reuse instead of returning it to the kernel: blocks up to 32 MiB are
/// served from the heap (never mmap) and the heap is never trimmed. Returns whether the settings
/// took effect (always false off glibc). Binaries call it once at start-up.
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes glibc allocator parameters; it takes the allocator's
        // own lock and is safe to call at any time from any thread. 32 MiB is glibc's maximum
        // mmap threshold on 64-bit targets.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
