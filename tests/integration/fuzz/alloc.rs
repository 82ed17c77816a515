//! The allocation meter: a global allocator that, on a thread running a fuzz case,
//! tracks bytes allocated and not yet freed, and their peak. Other threads and other
//! tests pay one thread-local read per allocation.
//!
//! A single request above [`HARD_LIMIT`] while metering is refused (the process then
//! aborts with "memory allocation of N bytes failed"), after the meter writes which
//! thread asked, so a decoder that sizes a buffer from the input cannot take the
//! machine down before the harness can report it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Largest single allocation a fuzz case may request.
const HARD_LIMIT: usize = 2 << 30;

struct Counting;

#[global_allocator]
static GLOBAL: Counting = Counting;

thread_local! {
    /// Metering depth on this thread (0: off).
    static ON: Cell<u32> = const { Cell::new(0) };
    /// Bytes allocated and not freed since metering started (can go negative when the
    /// case frees what was allocated before).
    static LIVE: Cell<isize> = const { Cell::new(0) };
    /// Highest `LIVE` since metering started.
    static PEAK: Cell<isize> = const { Cell::new(0) };
    /// Allocations (and reallocations) this thread made, metering or not.
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

/// Allocations and reallocations the current thread has made so far.
pub fn allocations() -> u64 {
    COUNT.with(Cell::get)
}

fn grow(by: usize, total: usize) -> bool {
    COUNT.with(|c| c.set(c.get() + 1));
    ON.with(|on| {
        if on.get() == 0 {
            return true;
        }
        if total > HARD_LIMIT {
            let msg = b"fuzz: a case asked for one allocation over 2 GiB; refusing it\n";
            // SAFETY: writing a static buffer to stderr; no allocation.
            unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
            return false;
        }
        LIVE.with(|live| {
            let now = live.get() + by as isize;
            live.set(now);
            PEAK.with(|peak| peak.set(peak.get().max(now)));
        });
        true
    })
}

fn shrink(by: usize) {
    ON.with(|on| {
        if on.get() != 0 {
            LIVE.with(|live| live.set(live.get() - by as isize));
        }
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the bookkeeping
// only touches `const` thread-locals (no lazy initialisation, no destructor, no
// allocation), and a refused request returns null as `GlobalAlloc` allows.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !grow(layout.size(), layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !grow(layout.size(), layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrink(layout.size());
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            if !grow(new_size - layout.size(), new_size) {
                return std::ptr::null_mut();
            }
        } else {
            shrink(layout.size() - new_size);
        }
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Meters this thread's allocations until dropped.
pub struct Meter(());

impl Meter {
    /// Starts metering from zero.
    pub fn start() -> Meter {
        LIVE.with(|l| l.set(0));
        PEAK.with(|p| p.set(0));
        ON.with(|on| on.set(on.get() + 1));
        Meter(())
    }

    /// Highest number of bytes live at once since [`Meter::start`].
    pub fn peak(&self) -> usize {
        PEAK.with(|p| p.get().max(0) as usize)
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        ON.with(|on| on.set(on.get().saturating_sub(1)));
    }
}
