// SPDX-License-Identifier: GPL-2.0

// The engine runs with interrupts off in VMX operation, where a panic is a kernel BUG with
// the CPU in VMX operation: no indexing that can go out of bounds, no arithmetic that can
// overflow (the kernel builds with overflow checks), no unwrap/expect/panic!/unreachable!.
// Tests may use them. See Documentation/shadow-paging.md, "No panics with interrupts off".
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable
    )
)]

//! shadowvm's shadow MMU engine: pure `core` Rust, shared by the kernel module (included
//! with `#[path = "mmu/mod.rs"] mod mmu;`) and the host tests (`rust/mmu/lib.rs`).
//!
//! The engine keeps shadow page tables (guest-virtual -> host-physical, in the format the
//! CPU really walks: 4-level for a guest in IA-32e mode, PAE otherwise) consistent with the
//! guest's own page tables. See `Documentation/shadow-paging.md` for the design and the
//! control flow; the entry points are the methods of [`Mmu`].
//!
//! # Calling convention
//!
//! Every event takes the caller's [`PageSource`] and [`GuestMemory`]. An event that
//! returns [`MmuError::NeedMemory`] changed nothing visible: refill the page cache and
//! call it again with the same arguments.
//!
//! # Hardware contract
//!
//! While the guest runs, program the CPU as [`Mmu::hw_state`] says: GUEST_CR3 = the
//! shadow root, CR0.PG=CR0.WP=1, CR4.PAE=1, CR4.PSE/PGE/PCIDE/PKE/LA57=0, CR4.SMEP/SMAP =
//! the guest's while guest paging is on (0 when off), EFER.NXE=1, EFER.LME/LMA = the
//! guest's LMA; #PF intercepted (with [`HwPaging::pfec_bypass`] only P=1 ones: page-fault
//! error-code mask = match = P), CR3 loads, INVLPG, INVPCID and the CR0/CR4 paging bits
//! intercepted. With a VPID, invalidate what [`Mmu::take_tlb_flush`] reports before each
//! VM entry, on top of what the guest's own TLB operations ask for.

pub mod access;
pub mod bits;
mod control;
mod dlist;
mod fault;
mod frames;
mod lists;
pub mod mem;
mod page;
mod pool;
mod roles;
mod roots;
mod sp;
pub mod stats;
mod sync;
pub mod walk;
mod write;

pub use mem::{GuestFrame, GuestMemory, HostPage, PageSource};
pub use stats::{Counter, Stats, COUNTER_NAMES, NUM_COUNTERS};
pub use walk::{Access, GuestMode, PageFault, PagingCtx};

use bits::*;
use control::ModeBits;
use frames::Frames;
use page::PageList;
use pool::Pool;
use roots::RootCache;
use sp::Lru;

/// Largest root cache the engine supports (see [`Config::root_cache_size`]).
pub const MAX_ROOT_CACHE: usize = 128;

pub use frames::MAX_INDEXED_FRAMES;

/// Guest frames per shadow page of the limit that scales with guest memory: the limit is
/// the larger of [`Config::max_shadow_pages`] and the guest's frames / 64 (enough for
/// the guest to map all its memory with 4 KiB pages 8 times over; each shadow page costs
/// 8 KiB, so at most 1/32 of guest memory), see [`Mmu::set_guest_frames`].
pub const FRAMES_PER_SHADOW_PAGE: u64 = 64;
/// Cap of the scaled part of the shadow-page limit (2 GiB of shadow pages).
pub const MAX_SCALED_SHADOW_PAGES: usize = 1 << 18;

/// The not-filled shadow-entry value when the host MAXPHYADDR is at most
/// [`NOT_FILLED_BYTES_MAXPHYADDR`]: P=1 and reserved address bit 48 (a fault through it
/// has P=1, RSVD=1 and exits) in a value that repeats one byte, so a new shadow page is
/// filled with it by one `memset` (a REP STOS) instead of 512 stores. Its other bits
/// (8, 16, 24, 32, 40 and 56) say nothing the CPU uses once bit 48 is reserved.
pub(crate) const NOT_FILLED_BYTES: u64 = 0x0101_0101_0101_0101;
/// Largest host MAXPHYADDR for which bit 48 is reserved (bits MAXPHYADDR..=51 are).
pub(crate) const NOT_FILLED_BYTES_MAXPHYADDR: u8 = 48;

/// Engine configuration (per VM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The guest's MAXPHYADDR (what its CPUID reports), 32..=52. Bits at and above it in
    /// guest paging entries are reserved (#PF with RSVD).
    pub maxphyaddr: u8,
    /// Whether the guest has 1 GiB pages (CPUID.80000001H:EDX.Page1GB).
    pub gb_pages: bool,
    /// Most address spaces whose shadow roots are kept (1..=[`MAX_ROOT_CACHE`]). The
    /// cache holds up to 16 (or this, if fewer) and doubles, up to this bound, each time
    /// the guest switches back to an address space whose root it evicted for room.
    pub root_cache_size: usize,
    /// Maximum number of shadow pages (each is one table page plus one side page);
    /// beyond it the least recently used ones are zapped. At least 64. With
    /// `scale_shadow_pages`, the floor of a limit that grows with guest memory.
    pub max_shadow_pages: usize,
    /// Raise the shadow-page limit with guest memory ([`Mmu::set_guest_frames`]); false
    /// keeps `max_shadow_pages` as a fixed bound.
    pub scale_shadow_pages: bool,
    /// Emulated writes to one shadowed frame, without the frame being used for a
    /// translation in between, after which the frame is unshadowed.
    pub flood_threshold: u8,
    /// Let leaf page tables go out of sync instead of emulating every write to them.
    pub unsync: bool,
    /// Guest PTEs around a faulting one (an aligned group of this many entries of the
    /// same guest table) mapped with it when the guest allows it, as KVM's
    /// `pte_prefetch`; 0 or 1 turns prefetch off. A power of two up to 512 (others are
    /// rounded down).
    pub prefetch: u16,
    /// The MAXPHYADDR of the CPU that walks the shadow tables (the host's), 32..=52:
    /// physical-address bits 51 down to it are reserved in shadow entries, which the
    /// guest-not-present bypass needs (see `gnp_bypass`).
    pub host_maxphyaddr: u8,
    /// Guest-not-present bypass (Xen's "magic" entries, KVM's old `bypass_guest_pf`):
    /// shadow entries not filled yet hold P=1 with reserved bits (a fault through them
    /// exits with P=1,RSVD=1), entries whose guest entry is known not present hold 0, and
    /// [`HwPaging::pfec_bypass`] tells the vCPU when P=0 faults may go straight to the
    /// guest (page-fault error-code mask = match = P). Off when `host_maxphyaddr` is 52
    /// (no reserved address bit). Off by default: on the benchmarks it saved no exits and
    /// cost time (Documentation/benchmarks.md).
    pub gnp_bypass: bool,
}

impl Config {
    /// Defaults: MAXPHYADDR 46, 1 GiB pages, 8 cached roots, at least 4096 shadow pages
    /// (more for guests above 1 GiB), prefetch of 8 PTEs.
    pub const DEFAULT: Config = Config {
        maxphyaddr: 46,
        gb_pages: true,
        root_cache_size: 8,
        max_shadow_pages: 4096,
        scale_shadow_pages: true,
        flood_threshold: 3,
        unsync: true,
        prefetch: 8,
        host_maxphyaddr: 46,
        gnp_bypass: false,
    };
}

impl Default for Config {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why an event could not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmuError {
    /// The [`PageSource`] ran dry. Nothing changed: refill and retry the same event.
    NeedMemory,
    /// `max_shadow_pages` (or the bookkeeping limit) is reached and nothing can be freed:
    /// retrying cannot help. The vCPU ends the run with `SHADOWVM_EXIT_INTERNAL_ERROR`,
    /// suberror `SHADOWVM_INTERNAL_ERROR_MMU`, data[0] = [`MmuError::code`].
    LimitReached,
}

impl MmuError {
    /// A number for userspace (internal-error data): 1 `NeedMemory`, 2 `LimitReached`.
    pub fn code(self) -> u64 {
        match self {
            MmuError::NeedMemory => 1,
            MmuError::LimitReached => 2,
        }
    }
}

/// Where the last [`PfOutcome::EmulateWrite`] came from (for [`Mmu::unprotect`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EmuSite {
    pub gva: u64,
    pub gpa: u64,
    pub access: Access,
    /// The write hit a write-protected page table (not the CR0.WP=0 + SMAP case).
    pub page_table: bool,
}

/// What the vCPU must do after a #PF VM exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PfOutcome {
    /// The shadow now maps the access (or already did): re-enter the guest.
    Fixed,
    /// The fault is the guest's: inject #PF with this error code and CR2.
    Inject(PageFault),
    /// The access targets unbacked guest-physical memory: emulate it as MMIO.
    Mmio {
        /// Guest-physical address accessed.
        gpa: u64,
    },
    /// A write the engine cannot let through (a write-protected guest page table, or a
    /// CR0.WP=0 supervisor write to a read-only user page under SMAP): emulate the
    /// instruction (translate with [`Mmu::translate`]), store into guest memory, then
    /// call [`Mmu::guest_wrote`] for each store. If the instruction cannot be emulated,
    /// call [`Mmu::unprotect`]: re-enter if it returns true, otherwise end the run with an
    /// internal error carrying the instruction bytes (re-entering would loop).
    EmulateWrite {
        /// Guest-physical address of the faulting access.
        gpa: u64,
    },
}

/// Result of an event that may raise #GP in the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtlOutcome {
    /// Done; program the new [`Mmu::hw_state`].
    Ok,
    /// Inject #GP(0); nothing changed (bad PAE PDPTE, reserved CR3 bits, bad INVPCID).
    Gp,
}

/// What the CPU's TLB may hold that the shadow tables no longer say, since the last
/// [`Mmu::take_tlb_flush`]: with VPIDs the TLB outlives VM entries, so the vCPU must
/// invalidate that before the next one. Only changes that take something away count
/// (a present shadow entry dropped, pointed elsewhere or made stricter, or another root
/// made current); filling entries or adding permissions needs nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TlbFlush {
    /// Nothing to invalidate.
    #[default]
    None,
    /// One entry of a level-1 shadow table changed. After [`Mmu::invlpg`] (or an
    /// [`InvpcidKind::Address`] for the current PCID) it is the entry of the address
    /// invalidated, so invalidating that address is enough; elsewhere treat it as `All`.
    OneLeaf,
    /// Invalidate every translation of the vCPU.
    All,
}

impl TlbFlush {
    /// Both of `self` and `other`.
    pub fn and(self, other: TlbFlush) -> TlbFlush {
        match (self, other) {
            (TlbFlush::None, x) | (x, TlbFlush::None) => x,
            _ => TlbFlush::All,
        }
    }
}

/// INVPCID types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvpcidKind {
    /// Type 0: one address in one PCID.
    Address,
    /// Type 1: one PCID.
    Single,
    /// Type 2: everything, global translations included.
    AllIncludingGlobal,
    /// Type 3: everything but global translations.
    AllExceptGlobal,
}

/// The paging state the CPU must run the guest with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HwPaging {
    /// GUEST_CR3: host-physical address of the shadow root (a PML4 page, or a PAE PDPT
    /// in a page below 4 GiB). 0 before the first [`Mmu::set_mode`].
    pub cr3: u64,
    /// Bits to set in the real CR0 on top of the guest's (PG, WP).
    pub cr0_set: u64,
    /// CR4 bits the engine owns; the real CR4 has `cr4` in them, the guest's elsewhere.
    pub cr4_mask: u64,
    /// Values of the owned CR4 bits.
    pub cr4: u64,
    /// EFER bits the engine owns.
    pub efer_mask: u64,
    /// Values of the owned EFER bits.
    pub efer: u64,
    /// Guest-not-present bypass in force: a #PF with P=0 through the shadow is the
    /// guest's own, with the error code and CR2 the guest's paging would give, so the
    /// vCPU lets it go to the guest without an exit (PFEC_MASK = PFEC_MATCH = P with
    /// #PF in the exception bitmap). False: every #PF must exit (mask = match = 0).
    pub pfec_bypass: bool,
}

/// One VM's shadow MMU, made of parts that each keep their own invariants: the record
/// pool (`pool.rs`), the spare pages (`page.rs`), the guest frames (`frames.rs`: per-gfn
/// index, hash beyond it, out-of-sync list), the shadow pages' LRU list (`sp.rs`) and the
/// root cache (`roots.rs`: hash and most-recently-used list).
///
/// # Invariants
///
/// Across the parts:
///
/// * Every shadow page (record `sp`) is on the LRU list, on the chain of its guest frame
///   record, and owns two pages (table and side) from the page source.
/// * A present non-leaf shadow entry at (`sp`, `slot`) points to the table page of the
///   shadow page whose id is stored in `sp`'s side page at `slot`, and that page's
///   parent list holds the reference (`sp`, `slot`). A present leaf entry maps the host
///   frame of the guest frame stored in the side page, and that frame's reverse map holds
///   the reference.
/// * For every guest frame, either all its indirect shadow pages are in sync and no
///   present leaf shadow entry maps the frame writable, or all are out of sync and the
///   frame is on the unsync list.
/// * Shadow pages pinned by a cached root (`root_count > 0`) are never freed.
/// * `shadow_limit >= cfg.max_shadow_pages`; it only grows (with guest memory).
/// * A leaf entry of a guest table's shadow page filled without a fault (prefetch,
///   INVLPG) maps what the guest entry mapped when it was filled, and that entry had its
///   A bit set and, if the shadow entry is writable, its D bit.
/// * A shadow entry is filled (P=1 and not `not_filled`), not filled (`not_filled`), or,
///   only when `not_filled != 0`, 0: then the page is indirect and in sync and the guest
///   entry it shadows is not present (so the guest cannot make it present without an
///   exit). Direct and out-of-sync pages hold no 0.
pub struct Mmu {
    cfg: Config,
    /// The paging context the shadow is built for, derived from the registers the caller
    /// passes to [`Mmu::set_mode`] and [`Mmu::set_cr3`].
    ctx: PagingCtx,
    /// The paging bits of CR0/CR4/EFER the shadow is built for (the registers themselves
    /// are the vCPU's: see [`control::ModeBits`]).
    mode_bits: ModeBits,
    /// `Role::base(&ctx)`, kept with `ctx` (only [`Mmu::set_mode`] changes what it
    /// depends on): every CR3 write looks its root up by it.
    base_role: roles::Role,
    pool: Pool,
    spare: PageList,
    spare_low: PageList,
    frames: Frames,
    roots: RootCache,
    lru: Lru,
    /// The last [`PfOutcome::EmulateWrite`]: where, and whether it was for a page table.
    emu_site: EmuSite,
    /// The last (RIP, gpa) pairs `unprotect` let through, newest first: the same pair
    /// again means re-entering made no progress.
    retried: [(u64, u64); 2],
    stats: Stats,
    /// The shadow-page limit in force: `cfg.max_shadow_pages` raised with guest memory.
    shadow_limit: usize,
    /// Engine steps done (list entries visited, shadow entries synced or dropped): a
    /// deterministic measure of how much work events cost, for the tests.
    work: u64,
    /// Shadow changes the CPU's TLB may not have seen (see [`TlbFlush`]).
    tlb_flush: TlbFlush,
    /// The value of a shadow entry not filled yet when the guest-not-present bypass is on
    /// ([`NOT_FILLED_BYTES`], or P=1 with the reserved address bits
    /// 51..=`host_maxphyaddr`), 0 when off.
    not_filled: u64,
    /// Changes of the shadow's non-leaf structure (a non-leaf entry linked or dropped, a
    /// shadow page zapped, a root freed): a [`control::LeafHint`] taken before one is
    /// stale.
    paths_gen: u64,
    /// Where the last INVLPG of the current root found its leaf table.
    leaf_hint: control::LeafHint,
}

// SAFETY: an `Mmu` exclusively owns every page and record its raw pointers refer to (they
// come from the caller's `PageSource` and go back to it); nothing in it is tied to a thread,
// so it may move between CPUs. It is not `Sync`: callers serialise access (a VM lock).
unsafe impl Send for Mmu {}

impl Mmu {
    /// A new engine with paging off and nothing allocated. Call [`Mmu::set_mode`] (with the
    /// guest's reset CR0/CR4/EFER) before the first VM entry to build the first root.
    pub const fn new(cfg: Config) -> Self {
        let mut cfg = cfg;
        if cfg.maxphyaddr < 32 {
            cfg.maxphyaddr = 32;
        }
        if cfg.maxphyaddr > 52 {
            cfg.maxphyaddr = 52;
        }
        if cfg.host_maxphyaddr < 32 {
            cfg.host_maxphyaddr = 32;
        }
        if cfg.host_maxphyaddr >= 52 {
            // No reserved physical-address bit to mark entries with.
            cfg.host_maxphyaddr = 52;
            cfg.gnp_bypass = false;
        }
        let not_filled = if !cfg.gnp_bypass {
            0
        } else if cfg.host_maxphyaddr <= NOT_FILLED_BYTES_MAXPHYADDR {
            NOT_FILLED_BYTES
        } else {
            PTE_P | bits(51, cfg.host_maxphyaddr as u32)
        };
        if cfg.root_cache_size == 0 {
            cfg.root_cache_size = 1;
        }
        if cfg.root_cache_size > MAX_ROOT_CACHE {
            cfg.root_cache_size = MAX_ROOT_CACHE;
        }
        if cfg.max_shadow_pages < 64 {
            cfg.max_shadow_pages = 64;
        }
        if cfg.flood_threshold == 0 {
            cfg.flood_threshold = 1;
        }
        // Largest power of two not above the request, at most 512 (a table's entries).
        let mut prefetch = 512u16;
        while prefetch > cfg.prefetch {
            prefetch >>= 1;
        }
        cfg.prefetch = prefetch;
        let mut ctx = PagingCtx::off(cfg.maxphyaddr);
        ctx.gb_pages = cfg.gb_pages;
        Mmu {
            cfg,
            ctx,
            mode_bits: ModeBits::RESET,
            base_role: roles::Role::base(&ctx),
            pool: Pool::new(),
            spare: PageList::new(),
            spare_low: PageList::new(),
            frames: Frames::new(),
            roots: RootCache::new(),
            lru: Lru::new(),
            emu_site: EmuSite {
                gva: 0,
                gpa: u64::MAX,
                access: Access::NONE,
                page_table: false,
            },
            retried: [(0, u64::MAX); 2],
            stats: Stats::new(),
            shadow_limit: cfg.max_shadow_pages,
            work: 0,
            tlb_flush: TlbFlush::None,
            not_filled,
            paths_gen: 0,
            leaf_hint: control::LeafHint::NONE,
        }
    }

    /// Sizes the engine for guest memory made of frames below `frames` (the highest
    /// guest-physical frame number plus one): grows the per-gfn index to cover them (up
    /// to [`MAX_INDEXED_FRAMES`]; records of frames beyond it go to a small hash) and
    /// with [`Config::scale_shadow_pages`] raises the shadow-page limit to
    /// `frames / FRAMES_PER_SHADOW_PAGE` if that is more than [`Config::max_shadow_pages`]
    /// (capped at [`MAX_SCALED_SHADOW_PAGES`]). Call it
    /// whenever guest memory is set or grows; it never shrinks anything. The index takes
    /// one page per 4 MiB of guest memory, from `src`: on [`MmuError::NeedMemory`] what
    /// was allocated is kept and the call goes on from there when retried; until it
    /// succeeds the engine works as before it (correct, slower lookups).
    pub fn set_guest_frames<P: PageSource + ?Sized>(
        &mut self,
        src: &mut P,
        frames: u64,
    ) -> Result<(), MmuError> {
        self.frames.grow(&mut self.pool, src, frames)?;
        if !self.cfg.scale_shadow_pages {
            return Ok(());
        }
        let scaled = usize::try_from(frames / FRAMES_PER_SHADOW_PAGE)
            .unwrap_or(usize::MAX)
            .min(MAX_SCALED_SHADOW_PAGES);
        self.shadow_limit = self.shadow_limit.max(scaled);
        Ok(())
    }

    /// The shadow-page limit in force ([`Config::max_shadow_pages`], raised with guest
    /// memory by [`Mmu::set_guest_frames`]).
    pub fn shadow_page_limit(&self) -> usize {
        self.shadow_limit
    }

    /// Guest frames the per-gfn index covers (test and debugging aid).
    pub fn indexed_frames(&self) -> u64 {
        self.frames.indexed()
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.cfg
    }

    /// The guest paging state the engine believes in.
    pub fn paging(&self) -> PagingCtx {
        self.ctx
    }

    /// Host-physical address of the current shadow root (GUEST_CR3), 0 if none yet.
    pub fn root_hpa(&self) -> u64 {
        self.roots.hpa()
    }

    /// The paging state the CPU must run the guest with (see the module docs).
    pub fn hw_state(&self) -> HwPaging {
        let paging = self.ctx.mode != GuestMode::Off;
        let mut cr4 = CR4_PAE;
        if paging && self.ctx.smep {
            cr4 |= CR4_SMEP;
        }
        if paging && self.ctx.smap {
            cr4 |= CR4_SMAP;
        }
        let mut efer = EFER_NXE;
        if self.ctx.mode == GuestMode::Long4 {
            efer |= EFER_LME | EFER_LMA;
        }
        HwPaging {
            cr3: self.roots.hpa(),
            cr0_set: CR0_PG | CR0_WP,
            cr4_mask: CR4_PSE
                | CR4_PAE
                | CR4_PGE
                | CR4_PCIDE
                | CR4_SMEP
                | CR4_SMAP
                | CR4_PKE
                | CR4_LA57
                | CR4_CET,
            cr4,
            efer_mask: EFER_LME | EFER_LMA | EFER_NXE,
            efer,
            pfec_bypass: self.pfec_bypass(),
        }
    }

    /// Whether P=0 faults through the shadow may go straight to the guest: the bypass is
    /// on, guest paging is on (with paging off the guest never sees #PF), and the guest's
    /// error code for a fetch carries I/D exactly when the CPU's does. The CPU runs the
    /// guest with EFER.NXE=1 and PAE paging, so it always reports I/D for fetches; the
    /// guest's paging reports it only with CR4.SMEP=1 or with PAE/4-level paging and
    /// EFER.NXE=1 (SDM vol. 3A 4.7).
    pub(super) fn pfec_bypass(&self) -> bool {
        let fetch_id = self.ctx.smep || (self.ctx.mode != GuestMode::Bits32 && self.ctx.nxe);
        self.not_filled != 0 && self.ctx.mode != GuestMode::Off && fetch_id
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The counters as (name, value) pairs in a fixed order, for userspace.
    pub fn counters(&self) -> [(&'static str, u64); NUM_COUNTERS] {
        self.stats.list()
    }

    /// Number of shadow pages in existence.
    pub fn shadow_pages(&self) -> usize {
        self.lru.len()
    }

    /// Number of cached roots.
    pub fn cached_roots(&self) -> usize {
        self.roots.len()
    }

    /// What the CPU's TLB may hold that the shadow no longer says, since the last call
    /// (see [`TlbFlush`]); the vCPU invalidates it before the next VM entry.
    pub fn take_tlb_flush(&mut self) -> TlbFlush {
        let root = if self.roots.take_switched() {
            TlbFlush::All
        } else {
            TlbFlush::None
        };
        core::mem::take(&mut self.tlb_flush).and(root)
    }

    /// Engine steps done so far (list entries visited, shadow entries synced or dropped):
    /// tests bound the cost of events with it.
    pub fn work_steps(&self) -> u64 {
        self.work
    }

    /// Guest-virtual to guest-physical translation for the instruction emulator, with the
    /// guest's permission checks and A/D updates for `access` (SDM rules).
    pub fn translate<G: GuestMemory + ?Sized>(
        &self,
        mem: &G,
        gva: u64,
        access: Access,
    ) -> Result<u64, PageFault> {
        walk::walk(&self.ctx, mem, gva, access, true).map(|w| w.gpa)
    }
}
