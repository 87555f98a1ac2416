//! Settings of the process a node or a client program runs in.

/// Turns transparent huge pages off for this process, as Redis and RabbitMQ advise.
///
/// With THP on (`always`, or `madvise`, which mimalloc asks for), every fresh page an
/// allocator hands out faults in and zeroes a whole 2 MiB huge page, and mimalloc
/// purges idle pages, so the cycle repeats under a steady load. A busy mirrored queue
/// spent a quarter of each node's CPU clearing pages
/// (docs/2026-12-05-transparent-huge-pages.md), and a client producing 100-byte
/// records to 1 000 partitions over a third of its own. `warren` calls it at start;
/// a client program that publishes at high rates can call it first thing too.
/// Without effect off Linux, or on a kernel without `PR_SET_THP_DISABLE`.
pub fn without_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes integer arguments and changes only this
    // process's page policy; its result is not needed (an old kernel leaves THP on).
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
