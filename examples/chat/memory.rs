//! The chat server gives memory back once a crowd leaves. By default glibc's malloc keeps what
//! its per-thread arenas freed: after 2,000 connections come and go the process stays at its
//! peak (`cargo bench --bench soak`: 8 MiB before 60 s of connection churn, 56 MiB at the peak
//! and 56 MiB 10 s after). Two ways out, measured by the same bench:
//! - default: glibc, with `malloc_trim(0)` every 5 s, which hands the free pages of every arena
//!   back to the system (10 MiB 10 s after the churn; free of charge to build);
//! - `--features jemalloc`: jemalloc as the global allocator, purging from a background thread
//!   1 s after memory is freed (back within 20% of before; the allocator's C build adds
//!   minutes to a cold build, hence a feature rather than the default).
//!
//! mimalloc was measured too and left aside: its worker threads keep their freed pages while
//! they are idle (61 MiB 10 s after the churn).

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its start: purge from a background thread, 1 s after memory
/// is freed (by default jemalloc purges only while the program allocates, after 10 s).
#[cfg(feature = "jemalloc")]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Starts giving freed memory back to the system, as the allocator needs.
pub fn give_back_freed_memory() {
    #[cfg(all(not(feature = "jemalloc"), target_os = "linux", target_env = "gnu"))]
    std::thread::Builder::new()
        .name("malloc-trim".into())
        .spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_secs(5));
            // SAFETY: malloc_trim has no precondition; it only releases free memory.
            unsafe { libc::malloc_trim(0) };
        })
        .map(drop)
        .unwrap_or_else(|e| log::warn!("no malloc_trim thread: {e}"));
}
