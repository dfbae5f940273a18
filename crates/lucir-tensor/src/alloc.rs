//! Allocator tuning for training loops.
//!
//! Every training step allocates and frees the same multi-megabyte activation and gradient
//! buffers. glibc's defaults hand such blocks back to the kernel (mmap/munmap above a dynamic
//! threshold, heap trimming below it), so the next step pays a page fault and a page clear for
//! every 4 KiB it touches again. [`retain_freed_memory`] keeps freed blocks in the process.
//!
//! Kept in the heap, those buffers sit on 4 KiB pages: a 6 MiB activation is 1600 pages, more
//! than the TLB holds, and a batch norm reading one channel's planes (an image apart) misses
//! it on every plane. [`HugePages`] asks the kernel to back the heap with transparent huge
//! pages (2 MiB) where it is configured to do so on request (`madvise`, the usual setting).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Keeps freed memory for reuse instead of returning it to the kernel: blocks up to 32 MiB are
/// served from the heap (never mmap) and the heap is never trimmed; the heap grows 32 MiB more
/// than asked each time (so that [`HugePages`] finds large untouched stretches to advise).
/// Every thread allocates from that one heap: a step run on a rayon worker
/// ([`crate::with_workers_awake`]) would otherwise take its tensors from the worker's own arena,
/// heaps mapped apart from it (each large block advised on its own, a system call each).
/// Returns whether the settings took effect (always false off glibc).
///
/// # Safety
/// Call it before any other thread of the process exists (rayon's pool included), and not
/// from a signal handler: glibc's `mallopt` writes the allocator's parameters under the main
/// arena's lock only, while `malloc` and `free` in other threads read them without it (glibc
/// documents it MT-Unsafe, `const:mallopt`).
pub unsafe fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` takes two integers and touches no memory of ours: it sets the
        // global parameters of glibc's allocator. glibc marks it MT-Unsafe (`const:mallopt`):
        // it writes them while `malloc`/`free` in other threads may read them unsynchronised,
        // so this is free of races only before other threads exist: this function's contract.
        // 32 MiB is glibc's maximum mmap threshold on 64-bit targets.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
                && libc::mallopt(libc::M_TOP_PAD, 32 << 20) == 1
                && libc::mallopt(libc::M_ARENA_MAX, 1) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The system allocator, asking for transparent huge pages: after a block of 1 MiB or more is
/// handed out, the part of the heap (`brk`) not yet advised is marked `MADV_HUGEPAGE`, so the
/// kernel backs it with 2 MiB pages as it is first touched (and `khugepaged` merges what was
/// touched before); a large block outside the heap (mmap) has its own pages marked. A hint with
/// no effect on values, nothing where the kernel does not offer huge pages, and one system
/// call per growth of the heap, not per block. Install it in a binary with
/// `#[global_allocator] static ALLOC: HugePages = HugePages;`, together with
/// [`retain_freed_memory`].
#[derive(Clone, Copy, Debug, Default)]
pub struct HugePages;

/// Blocks from this size on check the heap.
const LARGE: usize = 1 << 20;

/// The end of the heap marked so far (0: none yet).
static ADVISED: AtomicUsize = AtomicUsize::new(0);

/// Marks the heap up to its current end, from where the last call stopped (or, the first
/// time, from the block at `p`), and a block at `p` of `size` bytes outside the heap.
fn advise(p: *mut u8, size: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let page = 4096;
        let mark = |from: usize, to: usize| {
            let (from, to) = (from.next_multiple_of(page), to / page * page);
            if to > from {
                // SAFETY: `madvise` with MADV_HUGEPAGE only changes how the kernel backs this
                // process's anonymous memory in the range; it reads and writes none of it.
                unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
            }
        };
        // SAFETY: `sbrk(0)` moves nothing: it returns the current end of the heap.
        let top = unsafe { libc::sbrk(0) } as usize;
        let at = p as usize;
        if at >= top {
            mark(at, at + size);
            return;
        }
        let done = ADVISED.fetch_max(top, Ordering::Relaxed);
        if done < top {
            mark(if done == 0 { at / page * page } else { done }, top);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = (p, size);
}

/// `p` (a block of `size` bytes, or null) after [`advise`] for a large one.
fn advised(p: *mut u8, size: usize) -> *mut u8 {
    if !p.is_null() && size >= LARGE {
        advise(p, size);
    }
    p
}

// SAFETY: every block comes from `System` with the caller's layout; `advise` changes no memory.
unsafe impl GlobalAlloc for HugePages {
    // SAFETY: `GlobalAlloc`'s contract, which `System` fulfils.
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        advised(unsafe { System.alloc(layout) }, layout.size())
    }

    // SAFETY: `GlobalAlloc`'s contract, which `System` fulfils.
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        advised(unsafe { System.alloc_zeroed(layout) }, layout.size())
    }

    // SAFETY: `GlobalAlloc`'s contract, which `System` fulfils.
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(p, layout) }
    }

    // SAFETY: `GlobalAlloc`'s contract, which `System` fulfils.
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        advised(unsafe { System.realloc(p, layout, size) }, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_pages_hands_out_working_blocks() {
        let a = HugePages;
        let (small, large) = (3 << 20, 5 << 20);
        let layout = Layout::from_size_align(small, 64).unwrap();
        // SAFETY: the layouts have non-zero sizes; every block is used within its size and
        // freed once with the layout it has.
        unsafe {
            let p = a.alloc_zeroed(layout);
            assert!(!p.is_null());
            assert!(std::slice::from_raw_parts(p, small).iter().all(|&b| b == 0));
            p.write_bytes(7, small);
            let q = a.realloc(p, layout, large);
            assert!(!q.is_null());
            assert!(std::slice::from_raw_parts(q, small).iter().all(|&b| b == 7));
            a.dealloc(q, Layout::from_size_align(large, 64).unwrap());
        }
    }
}
