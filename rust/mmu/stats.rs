// SPDX-License-Identifier: GPL-2.0

//! Event counters, exported as a fixed list of (name, value) pairs.

/// One counter per engine event. The discriminant is the index in [`COUNTER_NAMES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    /// #PF exits the engine fixed by building/updating shadow entries ("hidden" faults).
    HiddenFaultsFixed,
    /// #PF exits whose fault belongs to the guest (injected).
    GuestFaultsInjected,
    /// #PF exits on unbacked guest-physical addresses (MMIO).
    MmioFaults,
    /// #PF exits that found the shadow already right (nothing to do).
    SpuriousFaults,
    /// Writes to write-protected guest page tables returned for emulation.
    PtWriteEmulations,
    /// Emulated writes applied to shadow pages (`guest_wrote` on a shadowed frame).
    PtWritesHandled,
    /// Shadow pages created.
    ShadowPagesCreated,
    /// Shadow pages zapped (freed).
    ShadowPagesZapped,
    /// Shadow pages zapped because the shadow-page limit was reached.
    ShadowPagesReclaimed,
    /// Guest frames newly write-protected because they became page tables.
    FramesWriteProtected,
    /// Guest page-table frames that went out of sync (unprotected leaf tables).
    Unsync,
    /// Out-of-sync frames resynchronised (at CR3 write / flush / new shadow).
    Resync,
    /// Single shadow entries resynchronised at INVLPG.
    InvlpgResync,
    /// CR3 switches served from the root cache.
    RootCacheHits,
    /// CR3 switches that had to build a root.
    RootCacheMisses,
    /// CR3 writes.
    Cr3Writes,
    /// Paging-mode changes (CR0/CR4/EFER writes that change paging).
    ModeChanges,
    /// INVLPG events.
    Invlpg,
    /// INVPCID events.
    Invpcid,
    /// Guest TLB flushes (CR3 write without no-flush, mode change, INVPCID 1-3, flush()).
    TlbFlushes,
    /// Frames unshadowed because of write flooding.
    FloodUnshadows,
    /// Frames unshadowed on request (`unprotect`).
    Unprotects,
    /// Reverse maps that reached their cap: all mappings of the frame were dropped.
    RmapRecycles,
    /// Out-of-sync frames resynchronised early because too many were out of sync.
    UnsyncEvictions,
    /// Cached roots dropped to keep room for the working set under `max_shadow_pages`.
    RootsEvicted,
    /// `unprotect` calls that refused (re-entering could not make progress).
    UnprotectRefused,
    /// Shadow entries filled without a fault on them: neighbours of a faulting entry
    /// (prefetch) and entries filled at INVLPG.
    Prefetches,
    /// #PF exits whose fault is the guest's with P=0 (a not-present guest entry): with
    /// the guest-not-present bypass these are the ones whose shadow entry was not known
    /// to be guest-not-present yet (part of `guest_faults_injected`).
    GnpFaultsExited,
    /// Shadow entries set to 0 because their guest entry is not present: a fault
    /// through them goes to the guest without an exit (guest-not-present bypass).
    GnpEntriesSet,
}

/// Number of counters.
pub const NUM_COUNTERS: usize = 29;

/// Counter names, in [`Counter`] order (stable: userspace sees them).
pub const COUNTER_NAMES: [&str; NUM_COUNTERS] = [
    "hidden_faults_fixed",
    "guest_faults_injected",
    "mmio_faults",
    "spurious_faults",
    "pt_write_emulations",
    "pt_writes_handled",
    "shadow_pages_created",
    "shadow_pages_zapped",
    "shadow_pages_reclaimed",
    "frames_write_protected",
    "unsync",
    "resync",
    "invlpg_resync",
    "root_cache_hits",
    "root_cache_misses",
    "cr3_writes",
    "mode_changes",
    "invlpg",
    "invpcid",
    "tlb_flushes",
    "flood_unshadows",
    "unprotects",
    "rmap_recycles",
    "unsync_evictions",
    "roots_evicted",
    "unprotect_refused",
    "prefetches",
    "gnp_faults_exited",
    "gnp_entries_set",
];

/// The counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    v: [u64; NUM_COUNTERS],
}

impl Stats {
    /// All zero.
    pub const fn new() -> Self {
        Stats {
            v: [0; NUM_COUNTERS],
        }
    }

    /// Adds one.
    #[inline]
    pub fn inc(&mut self, c: Counter) {
        if let Some(x) = self.v.get_mut(c as usize) {
            *x = x.wrapping_add(1);
        }
    }

    /// One counter.
    pub fn get(&self, c: Counter) -> u64 {
        self.v.get(c as usize).copied().unwrap_or(0)
    }

    /// All counters as (name, value), in a fixed order.
    pub fn list(&self) -> [(&'static str, u64); NUM_COUNTERS] {
        let mut out = [("", 0u64); NUM_COUNTERS];
        for ((o, name), v) in out.iter_mut().zip(COUNTER_NAMES.iter()).zip(self.v.iter()) {
            *o = (*name, *v);
        }
        out
    }
}
