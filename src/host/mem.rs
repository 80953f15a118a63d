//! The process's own memory, as the C library manages it.

/// Returns the heap a reload freed to the kernel. A reload of a large configuration allocates tens of
/// MiB for a moment (the model, the new ruleset, the netlink transaction); glibc keeps freed memory
/// for reuse, so without this the resident size of an idle daemon stays at its last peak and grows
/// with fragmentation from one reload to the next (measured with 10,000 policies: 76 → 93 → 104 MiB
/// over three reloads). No safe wrapper exists for `malloc_trim` (nor for `mallopt`, [`one_arena`]):
/// these are the only unsafe calls outside the kernel layer.
pub fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas; it has no
    // preconditions and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Makes every thread of the process allocate from one malloc arena (`M_ARENA_MAX` 1); the daemon calls
/// it first, before it starts any thread. glibc gives each thread that allocates an arena of its own
/// (up to 8 per CPU): memory one thread freed (the YAML tree the parse threads built, the ruleset the
/// freeing thread dropped) is reused only by threads of that arena, so a reload's new model, ruleset
/// and transaction grew new pages in other arenas while free ones sat in these. Measured with 10,000
/// policies in one file over five reloads: peak RSS 105 MiB instead of 133, for the same live heap; a
/// one-file reload's time did not change (its parse is one file; the allocations of the daemon's other
/// threads are few). One-shot commands keep glibc's default (their parse and encoding threads are
/// what makes them fast).
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only sets a parameter of the allocator; it has no preconditions and is
    // thread-safe. Arenas already made stay; none is made after it.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Drops `value` on a short-lived thread of its own, off the caller's path: freeing a large ruleset or
/// configuration model (tens of thousands of small allocations, ~20 ms at 10,000 policies) need not
/// delay what the caller does next (a daemon's reload: being ready for the next one). The heap is
/// given back ([`give_back_free_memory`]) once the value is freed: a trim by the caller right after
/// this call would run before the thread freed anything. Dropped (and trimmed) in place when no
/// thread can be started. `None`: nothing to free, nothing is done.
pub fn drop_later<T: Send + 'static>(value: Option<T>) {
    let Some(value) = value else { return };
    let spawned = std::thread::Builder::new()
        .name("hostpolicyd-free".into())
        .spawn(move || {
            drop(value);
            give_back_free_memory();
        });
    if spawned.is_err() {
        // The closure (and the value with it) was dropped already, in place.
        give_back_free_memory();
    }
}
