//! What the file readers' fuzz tests share (lucir-nn's state and safetensors files,
//! lucir-driver's checkpoints): the case count, edits that mangle a valid file, and a global
//! allocator that notes the largest single allocation a thread asks for while it measures
//! ([`largest_allocation`]; each thread measures only itself, so parallel tests do not mix).
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;

/// Cases per fuzz property: 2 000 in CI; `LUCIR_FUZZ_CASES=1000000` for the long run recorded in
/// docs/reliability.md.
pub fn cases() -> u32 {
    std::env::var("LUCIR_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// A reader may allocate at most this many bytes at once per byte of input, plus
/// [`ALLOCATION_SLACK`]: room for its decoded values (an f64 per byte of U8 data, a 128-byte
/// record per byte that could start one), never for a length the file merely states.
pub const ALLOCATION_PER_BYTE: usize = 256;
/// Fixed allocations of a read (error messages, a B-tree node), whatever the input.
pub const ALLOCATION_SLACK: usize = 16 << 10;

/// Whether `largest` bytes at once is within the bound for an input of `len` bytes.
pub fn allocation_within_bound(len: usize, largest: usize) -> bool {
    largest <= ALLOCATION_PER_BYTE * len + ALLOCATION_SLACK
}

/// A postcard varint of `u64::MAX`: a length no file of these sizes can hold.
pub const HUGE_VARINT: [u8; 10] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];

/// One to four edits of a file: (operation, position, byte).
pub fn edits() -> impl Strategy<Value = Vec<(u8, usize, u8)>> {
    prop::collection::vec((0u8..7, any::<usize>(), any::<u8>()), 1..5)
}

/// `bytes` with `edits` applied: a byte set, inserted, removed or bit-flipped, the file cut,
/// or a huge varint (a tail of [`HUGE_VARINT`]) inserted or written over what is there.
pub fn mangle(mut bytes: Vec<u8>, edits: &[(u8, usize, u8)]) -> Vec<u8> {
    for &(op, pos, v) in edits {
        let i = pos % (bytes.len() + 1);
        let huge = &HUGE_VARINT[usize::from(v) % HUGE_VARINT.len()..];
        match op {
            0 if i < bytes.len() => bytes[i] = v,
            1 => bytes.insert(i, v),
            2 if i < bytes.len() => {
                bytes.remove(i);
            }
            3 => bytes.truncate(i),
            4 if i < bytes.len() => bytes[i] ^= 1 << (v % 8),
            5 => {
                bytes.splice(i..i, huge.iter().copied());
            }
            6 => {
                let end = (i + huge.len()).min(bytes.len());
                bytes.splice(i..end, huge.iter().copied());
            }
            _ => {}
        }
    }
    bytes
}

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

/// Records a request of `size` bytes if this thread measures. The thread-locals have constant
/// initialisers and no destructors, so reaching them never allocates and never fails.
fn note(size: usize) {
    if MEASURING.with(Cell::get) {
        LARGEST.with(|l| l.set(l.get().max(size)));
    }
}

/// The system allocator, with [`note`] on each request.
struct Probe;

// SAFETY: every call goes to the system allocator unchanged, with the caller's arguments; the
// probe only reads the requested sizes.
unsafe impl GlobalAlloc for Probe {
    // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which is passed on.
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for this function.
        unsafe { System.alloc(layout) }
    }

    // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract, which is passed on.
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for this function.
        unsafe { System.alloc_zeroed(layout) }
    }

    // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract, which is passed on.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` was allocated by `System` (every allocation here is), with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract, which is passed on.
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (every allocation here is), with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static PROBE: Probe = Probe;

/// Runs `f` and returns its result with the largest single allocation (bytes) it asked for on
/// this thread.
pub fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|l| l.set(0));
    MEASURING.with(|m| m.set(true));
    let r = f();
    MEASURING.with(|m| m.set(false));
    (r, LARGEST.with(Cell::get))
}
