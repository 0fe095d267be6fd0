//! The process's allocator: mimalloc, entered through its plain
//! `mi_malloc` family whenever the alignment asked for is one that every
//! mimalloc block has anyway (8 bytes: blocks are whole words).
//!
//! Why not the `mimalloc` crate's `MiMalloc`: it hands every request to
//! `mi_malloc_aligned`, whose fast path only takes a free block already in
//! the size class's current page. When that page runs out, mimalloc falls
//! back to over-allocating from a larger class for any size that is not a
//! power of two, and the size class itself is never refilled, so from
//! then on every such request pays the slow path. Callgrind counted it on
//! the cold path (`benches/dnsperf.sh CALLGRIND=1`): about ten
//! over-allocations per cold query; entering through `mi_malloc` took the
//! query from 49.2k to 48.4k user-space instructions. Rust's own `System`
//! allocator makes the same choice for glibc (plain `malloc` when the
//! alignment is within its guarantee).

use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// The alignment every mimalloc block has.
const WORD: usize = std::mem::size_of::<usize>();

/// mimalloc, as described in the module comment.
pub struct MiMalloc;

/// Whether a plain (unaligned) mimalloc call meets `align` for `size`.
#[inline]
fn plain(align: usize, size: usize) -> bool {
    align <= WORD && align <= size
}

// SAFETY: each method forwards to the mimalloc function of the same
// contract; the plain functions are used only where their blocks are
// aligned as `layout` requires (see `plain`), and `mi_free` frees blocks
// from either family.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(layout.align(), new_size) {
            mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size and alignment a program asks for comes back aligned,
    /// survives a write over its whole length, a grow and a shrink.
    #[test]
    fn blocks_are_aligned_as_asked_through_realloc() {
        let a = MiMalloc;
        for align in [1usize, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [1usize, 3, 8, 12, 24, 40, 100, 1000, 1233, 5000, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xa5, size);
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|b| *b == 0));
                    a.dealloc(z, layout);
                    let grown = a.realloc(p, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "grown {size} align {align}");
                    assert!(std::slice::from_raw_parts(grown, size)
                        .iter()
                        .all(|b| *b == 0xa5));
                    let big = Layout::from_size_align(size * 3, align).unwrap();
                    let shrunk = a.realloc(grown, big, size.div_ceil(2));
                    assert_eq!(shrunk as usize % align, 0);
                    let small = Layout::from_size_align(size.div_ceil(2), align).unwrap();
                    a.dealloc(shrunk, small);
                }
            }
        }
    }
}
