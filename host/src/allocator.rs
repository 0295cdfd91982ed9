//! The gateway's global allocator: mimalloc, asked for memory the way `malloc` is.
//!
//! `mimalloc::MiMalloc` hands every request to `mi_malloc_aligned`. Its fast path serves a
//! small block only when the size class's free list has one ready; otherwise, for any size whose
//! class is not a power of two (48, 80, 96 bytes, every future above 1 KiB), it over-allocates
//! `size + align - 1` bytes and aligns within them. That was half of a request's ~18 allocations
//! without plugins, ~170 instructions each (bench/README.md, forty-seventh session).
//!
//! No over-allocation is needed for the alignments Rust asks for almost always. mimalloc stands
//! in for C's `malloc`, so it returns blocks aligned for any object they can hold: 16 bytes
//! (`max_align_t`) for a block of 16 bytes or more, an 8-byte block at 8 (its size classes past
//! 8 bytes are multiples of 16, and a page's first block starts 16-aligned). So a layout whose
//! alignment is at most 16 and at most its size (a Rust size is a multiple of its alignment) is
//! served by plain `mi_malloc`, as std's `System` serves it by `malloc`; a larger alignment keeps
//! the aligned calls.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The largest alignment every mimalloc block at least that large has (C's `max_align_t`).
const MALLOC_ALIGN: usize = 16;

/// mimalloc as the global allocator, with `malloc`'s calls wherever they give the alignment
/// asked for (the module's doc says why).
pub struct GatewayAllocator;

/// Whether a block of `size` bytes from plain `mi_malloc` is aligned to `align`.
#[inline]
fn malloc_aligns(size: usize, align: usize) -> bool {
    align <= MALLOC_ALIGN && align <= size
}

// SAFETY: every block comes from mimalloc and goes back to it (`mi_free` takes a block from any
// of the calls below), and each call returns a block aligned as the layout asks: by
// `malloc_aligns` for the plain calls, by the aligned calls otherwise.
unsafe impl GlobalAlloc for GatewayAllocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: a layout's size is non-zero here (GlobalAlloc's contract) and its alignment a
        // power of two, as the mimalloc calls require.
        unsafe {
            if malloc_aligns(layout.size(), layout.align()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if malloc_aligns(layout.size(), layout.align()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` was returned by this allocator (GlobalAlloc's contract), so by mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` is mimalloc's and `new_size` non-zero (GlobalAlloc's contract); the
        // block it returns, moved or not, is aligned as `malloc_aligns` or the aligned call says.
        unsafe {
            if malloc_aligns(new_size, layout.align()) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every layout, from one byte to past a page, at every alignment up to 4 KiB: each of a run
    /// of blocks (so not only a page's first) is aligned as asked, holds what is written to it
    /// across a grow and a shrink, and zeroed memory is zero.
    #[test]
    fn blocks_are_aligned_as_asked_and_hold_their_bytes() {
        let a = GatewayAllocator;
        let sizes = [1usize, 2, 3, 7, 8, 12, 16, 24, 40, 48, 80, 96, 112, 160, 192, 200, 320, 1000, 1024, 1100, 1800, 5712, 12_288, 70_000];
        for align in [1usize, 2, 4, 8, 16, 32, 64, 4096] {
            for &size in &sizes {
                let size = size.next_multiple_of(align);
                let Ok(layout) = Layout::from_size_align(size, align) else { panic!("layout {size}/{align}") };
                // SAFETY: a non-zero-size layout; each block is written within its size and freed once.
                let run: Vec<*mut u8> = (0..40).map(|_| unsafe { a.alloc(layout) }).collect();
                for &p in &run {
                    assert!(!p.is_null() && p.addr() % align == 0, "{size} bytes at {align}: {p:p}");
                    // SAFETY: `p` is a live block from `layout`, freed once.
                    unsafe { a.dealloc(p, layout) };
                }
                // SAFETY: as above.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null() && p.addr() % align == 0, "{size} bytes at {align}: {p:p}");
                    p.write_bytes(0xA5, size);
                    let grown = a.realloc(p, layout, size * 3);
                    assert!(!grown.is_null() && grown.addr() % align == 0, "{size} -> {} at {align}", size * 3);
                    assert!((0..size).all(|i| *grown.add(i) == 0xA5), "{size} at {align}: bytes kept across a grow");
                    let grown_layout = Layout::from_size_align_unchecked(size * 3, align);
                    let shrunk = a.realloc(grown, grown_layout, align);
                    assert!(!shrunk.is_null() && shrunk.addr() % align == 0, "{size} -> {align} at {align}");
                    assert!((0..align).all(|i| *shrunk.add(i) == 0xA5), "{size} at {align}: bytes kept across a shrink");
                    a.dealloc(shrunk, Layout::from_size_align_unchecked(align, align));

                    let z = a.alloc_zeroed(layout);
                    assert!(!z.is_null() && z.addr() % align == 0, "zeroed {size} at {align}");
                    assert!((0..size).all(|i| *z.add(i) == 0), "zeroed {size} at {align} is zero");
                    a.dealloc(z, layout);
                }
            }
        }
    }

    /// Which calls take the plain path: only alignments `malloc` already gives.
    #[test]
    fn only_alignments_malloc_gives_take_the_plain_calls() {
        assert!(malloc_aligns(1, 1) && malloc_aligns(8, 8) && malloc_aligns(24, 8) && malloc_aligns(16, 16));
        assert!(malloc_aligns(5712, 16), "a large future at 16");
        assert!(!malloc_aligns(32, 32) && !malloc_aligns(4096, 4096), "larger alignments keep the aligned calls");
        assert!(!malloc_aligns(8, 16), "a block smaller than its alignment is not promised it");
    }
}
