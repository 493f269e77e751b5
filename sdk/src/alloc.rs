//! The plugins' allocator: small blocks from free lists by size class.
//!
//! A plugin allocates a few dozen small blocks a request (the strings the
//! gateway hands it, keys, header values) and frees them before the hook
//! returns. Under wasi-libc's dlmalloc, compiled to Wasm, an allocation and
//! its free cost ~450 instructions, a third of what the chain's plugins spend
//! in their own code. Here a block of up to [`MAX_SMALL`] bytes comes from the
//! free list of its power-of-two size class (a pop) and goes back to it (a
//! push); a class with an empty list carves blocks from a [`CHUNK`] taken
//! from the system allocator. Larger or more aligned blocks go to the system
//! allocator as before.
//!
//! Freed small blocks stay in their class for the next allocation of that
//! size and are not given back: an instance keeps what its busiest moment
//! needed, as its linear memory does anyway (Wasm memory never shrinks).
//!
//! Installed as the global allocator on `wasm32` by the `allocator` feature
//! (on by default); a plugin that wants another turns it off.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// The smallest class: a free block holds the list's next pointer.
const MIN_SMALL: usize = 16;
/// The largest block served from the classes.
pub const MAX_SMALL: usize = 1024;
/// The classes: 16, 32, ... [`MAX_SMALL`] bytes.
const CLASSES: usize = (MAX_SMALL / MIN_SMALL).trailing_zeros() as usize + 1;
/// What a class with no free block takes from the system allocator at once.
pub const CHUNK: usize = 16 * 1024;
/// Every block is aligned to this (and to its size up to it).
const ALIGN: usize = 16;

/// The state: one free list per class and the chunk being carved. Wasm
/// components run on one thread, so there is no locking.
#[derive(Debug)]
pub struct SizeClasses {
    state: UnsafeCell<State>,
}

#[derive(Debug)]
struct State {
    free: [*mut u8; CLASSES],
    /// The uncarved rest of the current chunk.
    next: *mut u8,
    end: *mut u8,
}

impl Default for SizeClasses {
    fn default() -> Self {
        Self::new()
    }
}

impl SizeClasses {
    pub const fn new() -> Self {
        Self {
            state: UnsafeCell::new(State {
                free: [ptr::null_mut(); CLASSES],
                next: ptr::null_mut(),
                end: ptr::null_mut(),
            }),
        }
    }
}

/// The class a layout is served from, or `None` for the system allocator.
fn class(layout: Layout) -> Option<usize> {
    if layout.size() > MAX_SMALL || layout.align() > ALIGN {
        return None;
    }
    let size = layout.size().max(MIN_SMALL).next_power_of_two();
    Some((size / MIN_SMALL).trailing_zeros() as usize)
}

const fn class_size(class: usize) -> usize {
    MIN_SMALL << class
}

#[expect(unsafe_code, reason = "an allocator hands out raw memory; see the SAFETY notes")]
mod imp {
    use super::*;

    // SAFETY: the allocator is only used from one thread at a time: on
    // wasm32-wasip2 there is one, and the native tests use their own
    // instance on the test's thread.
    unsafe impl Sync for SizeClasses {}

    impl SizeClasses {
        /// Carves a block of `class` from the current chunk, taking a new
        /// chunk when it is used up (the old one's rest is left unused).
        ///
        /// # Safety
        /// `state` is the allocator's own, borrowed by no one else.
        unsafe fn carve(state: &mut State, class: usize) -> *mut u8 {
            let size = class_size(class);
            if state.next.is_null() || (state.end as usize) - (state.next as usize) < size {
                // SAFETY: CHUNK is non-zero and a multiple of ALIGN, a power of two.
                let chunk = unsafe { System.alloc(Layout::from_size_align_unchecked(CHUNK, ALIGN)) };
                if chunk.is_null() {
                    return ptr::null_mut();
                }
                state.next = chunk;
                // SAFETY: the chunk is CHUNK bytes long.
                state.end = unsafe { chunk.add(CHUNK) };
            }
            let block = state.next;
            // SAFETY: at least `size` bytes are left before `end`.
            state.next = unsafe { block.add(size) };
            block
        }
    }

    // SAFETY: blocks are disjoint (carved once from chunks no one else
    // holds, then passed between free lists and their users), each at least
    // as large as its layout asks and aligned to min(its size, ALIGN), which
    // covers the layout's alignment (`class` sends larger alignments to the
    // system allocator). A freed block goes back to the class it came from:
    // `class` of the same layout gives the same class.
    unsafe impl GlobalAlloc for SizeClasses {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let Some(class) = class(layout) else {
                // SAFETY: the caller's layout contract, passed on.
                return unsafe { System.alloc(layout) };
            };
            // SAFETY: one thread; no reference to the state outlives a call.
            let state = unsafe { &mut *self.state.get() };
            let head = state.free[class];
            if head.is_null() {
                // SAFETY: as above.
                return unsafe { Self::carve(state, class) };
            }
            // SAFETY: a free block holds the next free block of its class.
            state.free[class] = unsafe { head.cast::<*mut u8>().read() };
            head
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let Some(class) = class(layout) else {
                // SAFETY: it came from System.alloc with this layout.
                return unsafe { System.dealloc(ptr, layout) };
            };
            // SAFETY: one thread; no reference to the state outlives a call.
            let state = unsafe { &mut *self.state.get() };
            // SAFETY: the block is ours again and at least MIN_SMALL bytes,
            // aligned for a pointer.
            unsafe { ptr.cast::<*mut u8>().write(state.free[class]) };
            state.free[class] = ptr;
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: the caller guarantees the new size with the old alignment is a valid layout.
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            match (class(layout), class(new_layout)) {
                (Some(old), Some(new)) if old == new => ptr,
                // SAFETY: both with the system allocator: the caller's contract, passed on.
                (None, None) => unsafe { System.realloc(ptr, layout, new_size) },
                _ => {
                    // SAFETY: the caller's contract; the copy stays within both blocks.
                    unsafe {
                        let moved = self.alloc(new_layout);
                        if !moved.is_null() {
                            ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                            self.dealloc(ptr, layout);
                        }
                        moved
                    }
                }
            }
        }
    }
}

#[cfg(all(target_arch = "wasm32", feature = "allocator"))]
#[global_allocator]
static ALLOCATOR: SizeClasses = SizeClasses::new();

#[cfg(test)]
#[expect(unsafe_code, reason = "calls the allocator directly")]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap_or_else(|_| Layout::new::<u8>())
    }

    #[test]
    fn sizes_map_to_the_smallest_class_that_holds_them() {
        assert_eq!(CLASSES, 7);
        for (size, want) in [(0, Some(0)), (1, Some(0)), (16, Some(0)), (17, Some(1)), (32, Some(1)), (1000, Some(6))] {
            assert_eq!(class(layout(size, 1)), want, "{size}");
        }
        assert_eq!(class(layout(1024, 8)), Some(6));
        assert_eq!(class(layout(1025, 8)), None, "too large");
        assert_eq!(class(layout(64, 32)), None, "aligned beyond 16");
    }

    #[test]
    fn blocks_are_disjoint_aligned_and_reused_by_their_class() {
        let a = SizeClasses::new();
        let mut held = Vec::new();
        // Enough blocks of every class (and large ones) to take several chunks.
        for round in 0..40usize {
            for size in [1usize, 15, 16, 24, 33, 100, 200, 512, 1000, 1024, 1025, 5000] {
                let l = layout(size, if size % 2 == 0 { 8 } else { 1 });
                // SAFETY: a valid non-zero layout.
                let p = unsafe { a.alloc(l) };
                assert!(!p.is_null());
                let align = if size <= MAX_SMALL { ALIGN } else { l.align() };
                assert_eq!(p as usize % align, 0, "{size}");
                // SAFETY: the block is `size` bytes long and ours.
                unsafe { ptr::write_bytes(p, (round % 251) as u8, size) };
                held.push((p, l, (round % 251) as u8));
            }
        }
        // Nothing overwrote anything: every block still holds its own byte.
        for &(p, l, byte) in &held {
            // SAFETY: as written above.
            let bytes = unsafe { std::slice::from_raw_parts(p, l.size()) };
            assert!(bytes.iter().all(|&b| b == byte));
        }
        // Freed blocks come back, last in first out, for the same class.
        let (p, l, _) = held[3];
        // SAFETY: allocated above with this layout, freed once.
        unsafe { a.dealloc(p, l) };
        // SAFETY: a valid layout of the same class (24 bytes: 32).
        let again = unsafe { a.alloc(layout(20, 4)) };
        assert_eq!(again, p);
        held[3] = (again, layout(20, 4), 0);
        for (p, l, _) in held {
            // SAFETY: each allocated once with this layout.
            unsafe { a.dealloc(p, l) };
        }
    }

    #[test]
    fn realloc_keeps_the_bytes_across_classes_and_the_system_allocator() {
        let a = SizeClasses::new();
        let l = layout(10, 1);
        // SAFETY: valid layouts; each pointer is reallocated from what the
        // previous call returned, with the layout it was given.
        unsafe {
            let p = a.alloc(l);
            ptr::copy_nonoverlapping(b"0123456789".as_ptr(), p, 10);
            let same = a.realloc(p, l, 16);
            assert_eq!(same, p, "still the 16-byte class");
            let grown = a.realloc(same, layout(16, 1), 600);
            let big = a.realloc(grown, layout(600, 1), 4000);
            let small = a.realloc(big, layout(4000, 1), 10);
            assert_eq!(std::slice::from_raw_parts(small, 10), b"0123456789");
            a.dealloc(small, l);
        }
    }
}
