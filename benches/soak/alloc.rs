//! The soak server's global allocator, chosen at run time: glibc's malloc, mimalloc or
//! jemalloc, by the `SOAK_ALLOCATOR` environment variable of the server process (`glibc`,
//! `glibc-trim`, `mimalloc`, `jemalloc`, `jemalloc-bg`; glibc when unset). jemalloc is there only when the
//! bench is built with `--features jemalloc` (its C build takes minutes). The choice is made at the
//! process's first allocation and never changes, so every block is freed by the allocator that
//! gave it. Every allocator also counts the bytes the program holds ([`live`]): the heap in use
//! whatever the allocator, against which its RSS tells what the allocator keeps.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicU8, Ordering};

/// The allocators the soak compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// glibc's malloc, as it comes.
    Glibc,
    /// glibc's malloc, with `malloc_trim(0)` every 5 s (the server's [`trim_every`]).
    GlibcTrim,
    /// mimalloc (the `mimalloc` crate).
    Mimalloc,
    /// jemalloc (the `tikv-jemallocator` crate; `--features jemalloc`).
    Jemalloc,
    /// jemalloc purging in background threads: [`JEMALLOC_BACKGROUND`].
    JemallocBg,
}

/// jemalloc's settings for `jemalloc-bg` (its `_RJEM_MALLOC_CONF` variable): a background
/// thread gives free pages back 1 s after they are freed, without waiting for the program
/// to allocate again (by default jemalloc purges only while the program allocates, after 10 s).
pub const JEMALLOC_BACKGROUND: &str = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0";

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Glibc => "glibc",
            Kind::GlibcTrim => "glibc-trim",
            Kind::Mimalloc => "mimalloc",
            Kind::Jemalloc => "jemalloc",
            Kind::JemallocBg => "jemalloc-bg",
        }
    }

    /// The variable the server process reads.
    pub const ENV: &'static str = "SOAK_ALLOCATOR";

    /// Whether this build has it.
    pub fn built(self) -> bool {
        !matches!(self, Kind::Jemalloc | Kind::JemallocBg) || cfg!(feature = "jemalloc")
    }
}

const UNSET: u8 = 0;
const SYSTEM: u8 = 1;
const MIMALLOC: u8 = 2;
const JEMALLOC: u8 = 3;

static CHOSEN: AtomicU8 = AtomicU8::new(UNSET);
static LIVE: AtomicIsize = AtomicIsize::new(0);

/// Reads `SOAK_ALLOCATOR` with libc's `getenv`, which does not allocate.
fn choose() -> u8 {
    let chosen = CHOSEN.load(Ordering::Relaxed);
    if chosen != UNSET {
        return chosen;
    }
    // SAFETY: a NUL-terminated name; getenv's result is read before anything can change the
    // environment (this runs at the process's first allocation, before `main`'s threads).
    let value = unsafe { libc::getenv(c"SOAK_ALLOCATOR".as_ptr()) };
    let kind = if value.is_null() {
        SYSTEM
    } else {
        // SAFETY: getenv returned a NUL-terminated string.
        match unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes() {
            b"mimalloc" => MIMALLOC,
            b"jemalloc" | b"jemalloc-bg" if cfg!(feature = "jemalloc") => JEMALLOC,
            _ => SYSTEM,
        }
    };
    // The first thread to choose wins; every thread reads the same variable anyway.
    match CHOSEN.compare_exchange(UNSET, kind, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => kind,
        Err(earlier) => earlier,
    }
}

/// The bytes the program holds now (requested sizes, not the allocator's own overhead).
pub fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// glibc's own account: (bytes in use, bytes held from the system: arenas + mmapped blocks),
/// from `mallinfo2`; None under another allocator.
pub fn glibc_info() -> Option<(usize, usize)> {
    if choose() != SYSTEM {
        return None;
    }
    // SAFETY: mallinfo2 only reads glibc's statistics.
    let m = unsafe { libc::mallinfo2() };
    Some((m.uordblks + m.hblkhd, m.arena + m.hblkhd))
}

/// `malloc_trim(0)`: glibc gives the free memory at the top and inside its arenas back to the
/// system. Does nothing under another allocator.
pub fn trim() {
    if choose() == SYSTEM {
        // SAFETY: malloc_trim has no precondition.
        unsafe { libc::malloc_trim(0) };
    }
}

/// Dispatches to the allocator chosen at the first allocation.
pub struct Switch;

static MI: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(feature = "jemalloc")]
static JE: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
/// Without the feature, `JEMALLOC` is never chosen.
#[cfg(not(feature = "jemalloc"))]
static JE: System = System;

// SAFETY: every call goes to one allocator for the whole life of the process (see `choose`),
// with the caller's layout unchanged.
unsafe impl GlobalAlloc for Switch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        match choose() {
            MIMALLOC => MI.alloc(layout),
            JEMALLOC => JE.alloc(layout),
            _ => System.alloc(layout),
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        match choose() {
            MIMALLOC => MI.alloc_zeroed(layout),
            JEMALLOC => JE.alloc_zeroed(layout),
            _ => System.alloc_zeroed(layout),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        match choose() {
            MIMALLOC => MI.dealloc(ptr, layout),
            JEMALLOC => JE.dealloc(ptr, layout),
            _ => System.dealloc(ptr, layout),
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        match choose() {
            MIMALLOC => MI.realloc(ptr, layout, new_size),
            JEMALLOC => JE.realloc(ptr, layout, new_size),
            _ => System.realloc(ptr, layout, new_size),
        }
    }
}
