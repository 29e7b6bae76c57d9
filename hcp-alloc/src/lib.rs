//! The global allocator of HCP's binaries (`hcp`, the benchmarks): mimalloc.
//!
//! The `mimalloc` crate enters mimalloc through its aligned functions (`mi_malloc_aligned`) for
//! every allocation. Those test the alignment, and beyond 1 KiB they take a slower path that
//! allocates more than asked so that it can align the block. Nearly every allocation of a Rust
//! program asks for an alignment of 8 or less, which every mimalloc block has (its blocks are
//! whole words): [`Allocator`] calls the plain functions (`mi_malloc`, `mi_zalloc`,
//! `mi_realloc`) for those, and the aligned ones only for larger alignments. The engine's
//! instructions per job (`./scripts/bench.sh callgrind`) fell by 5 % with it (68,134 to 64,775).
//!
//! mimalloc is built without asking Linux for transparent huge pages on its regions (the
//! `no_thp` feature of `libmimalloc-sys`; a system whose THP policy is `always` still gets
//! them). With them, the engine benchmark's 20,000 jobs held 76–94 MB resident instead of
//! 46–52 MB, and the kernel's zeroing and compaction of 2 MiB pages added up to 0.15 s of system
//! time to some runs: the latency spikes for which Redis and PostgreSQL advise turning THP off.
//! The price is paid at start-up, which takes more (small) page faults: `hcp serve` reading a
//! simulator state of 10,000 VMs answers `/readyz` in ~64 ms instead of ~52 ms.
//!
//! ```
//! #[global_allocator]
//! static ALLOCATOR: hcp_alloc::Allocator = hcp_alloc::Allocator;
//!
//! let v: Vec<u64> = (0..1000).collect();
//! assert_eq!(v.iter().sum::<u64>(), 499_500);
//! ```
#![no_std]

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use libmimalloc_sys as ffi;

/// The largest alignment every mimalloc block has: a word (mimalloc's block sizes are whole
/// words, and its pages start on 16 bytes).
const WORD: usize = core::mem::size_of::<usize>();

/// mimalloc as the global allocator; see the [crate documentation](crate).
#[derive(Debug, Clone, Copy, Default)]
pub struct Allocator;

// SAFETY: every method forwards to mimalloc, which returns blocks of at least the size asked
// (or null), aligned to a word at least; blocks are only given the plain functions when the
// layout's alignment is a word or less, and the aligned functions otherwise. `mi_free` and the
// reallocation functions accept any block mimalloc returned, aligned or not.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwards to mimalloc (see the impl's comment).
        unsafe {
            if layout.align() <= WORD {
                ffi::mi_malloc(layout.size()).cast()
            } else {
                ffi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwards to mimalloc (see the impl's comment).
        unsafe {
            if layout.align() <= WORD {
                ffi::mi_zalloc(layout.size()).cast()
            } else {
                ffi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { ffi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator, so from mimalloc; the new block keeps the
        // layout's alignment by the same rule as `alloc`.
        unsafe {
            if layout.align() <= WORD {
                ffi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                ffi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

/// [`Allocator`] that also counts, while switched on, the bytes allocated and not yet freed:
/// the benchmarks' measure of the heap. Switched off it costs one relaxed load per call, so a
/// benchmark that measures time or instructions runs with it off and measures what `hcp` runs.
///
/// ```
/// use std::sync::atomic::Ordering;
///
/// #[global_allocator]
/// static ALLOCATOR: hcp_alloc::Counting = hcp_alloc::Counting::new();
///
/// ALLOCATOR.start();
/// let before = ALLOCATOR.net_bytes();
/// let v: Vec<u8> = Vec::with_capacity(1 << 20);
/// assert!(ALLOCATOR.net_bytes().wrapping_sub(before) >= 1 << 20);
/// drop(v);
/// ALLOCATOR.stop();
/// ```
#[derive(Debug, Default)]
pub struct Counting {
    on: AtomicBool,
    /// Bytes allocated less bytes freed while counting, wrapping.
    net: AtomicUsize,
}

impl Counting {
    /// Returns the allocator, not counting.
    pub const fn new() -> Counting {
        Counting {
            on: AtomicBool::new(false),
            net: AtomicUsize::new(0),
        }
    }

    /// Counts from now on.
    pub fn start(&self) {
        self.on.store(true, Ordering::SeqCst);
    }

    /// Stops counting.
    pub fn stop(&self) {
        self.on.store(false, Ordering::SeqCst);
    }

    /// Returns the bytes allocated less the bytes freed while counting, wrapping: the
    /// difference of two readings taken while counting (`wrapping_sub`) is how much the heap
    /// grew between them.
    pub fn net_bytes(&self) -> usize {
        self.net.load(Ordering::SeqCst)
    }

    #[inline]
    fn count(&self, grown: usize, shrunk: usize) {
        if self.on.load(Ordering::Relaxed) {
            if grown > 0 {
                self.net.fetch_add(grown, Ordering::Relaxed);
            }
            if shrunk > 0 {
                self.net.fetch_sub(shrunk, Ordering::Relaxed);
            }
        }
    }
}

// SAFETY: every method forwards to `Allocator` with the same arguments and returns what it
// returned; counting touches no block.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwards the caller's contract.
        let p = unsafe { Allocator.alloc(layout) };
        if !p.is_null() {
            self.count(layout.size(), 0);
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwards the caller's contract.
        let p = unsafe { Allocator.alloc_zeroed(layout) };
        if !p.is_null() {
            self.count(layout.size(), 0);
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwards the caller's contract.
        unsafe { Allocator.dealloc(ptr, layout) };
        self.count(0, layout.size());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwards the caller's contract.
        let p = unsafe { Allocator.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            self.count(new_size, layout.size());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::vec::Vec;

    /// Every size and alignment a program asks for comes back aligned, writable, and keeps its
    /// bytes through a reallocation.
    #[test]
    #[allow(unsafe_code)]
    fn blocks_are_aligned_and_keep_their_bytes() {
        let a = Allocator;
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1, 7, 8, 24, 100, 1000, 1024, 1500, 5000, 70_000, 3 << 20] {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                // SAFETY: a non-zero size; the block is freed with its layout.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xAB, size);
                    let q = a.realloc(p, layout, size * 2);
                    assert!(!q.is_null());
                    assert_eq!(q as usize % align, 0, "realloc: size {size} align {align}");
                    assert!((0..size).all(|i| *q.add(i) == 0xAB));
                    a.dealloc(q, Layout::from_size_align(size * 2, align).unwrap());
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
        let v: Vec<u32> = (0..100_000).collect();
        assert_eq!(v.len(), 100_000);
    }
}
