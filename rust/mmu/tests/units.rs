// SPDX-License-Identifier: GPL-2.0
//! Unit tests, one per mechanism, and counter tests that prove the optimisations happen.

mod common;
use common::fixture::*;
use common::*;
use shadowvm_mmu::bits::*;
use shadowvm_mmu::*;

const PML4: u64 = 0;
const PDPT: u64 = 1;
const PD: u64 = 2;
const PT: u64 = 3;
const PT2: u64 = 4;
const PD_B: u64 = 5;
const PML4_B: u64 = 6;
const DATA: u64 = 10;
/// A 4-level guest: gva 0..2M through PT (PT[i] -> DATA+i, i < 16; PT[100] -> PT2;
/// PT[101] -> PD_B), gva 2M..4M through PT2 (PT2[0] -> DATA+20). PML4_B shares PDPT.
fn long_guest() -> GMem {
    let mem = GMem::new(40, &[39]);
    w8(&mem, PML4, 0, (PDPT << 12) | PWU);
    w8(&mem, PML4_B, 0, (PDPT << 12) | PWU);
    w8(&mem, PML4_B, 1, (PDPT << 12) | PWU);
    w8(&mem, PDPT, 0, (PD << 12) | PWU);
    w8(&mem, PDPT, 1, (PD_B << 12) | PWU);
    w8(&mem, PD, 0, (PT << 12) | PWU);
    w8(&mem, PD, 1, (PT2 << 12) | PWU);
    for i in 0..16 {
        w8(&mem, PT, i, ((DATA + i) << 12) | PWU);
    }
    w8(&mem, PT, 100, (PT2 << 12) | PWU);
    w8(&mem, PT, 101, (PD_B << 12) | PWU);
    w8(&mem, PT2, 0, ((DATA + 20) << 12) | PWU);
    mem
}

/// An engine in 4-level paging on [`long_guest`]'s first address space.
fn long_mmu(cfg: Config, mem: &GMem, host: &mut Host) -> Mmu {
    start(3, cfg, mem, host, PML4 << 12)
}

#[test]
fn root_cache_switch_back_builds_nothing() {
    let mem = long_guest();
    let mut host = Host::new();
    let mut mmu = long_mmu(Config::DEFAULT, &mem, &mut host);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x3000, RD, None),
        CpuResult::Ok(hpa(DATA + 3))
    );
    retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, PML4_B << 12));
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, (1 << 39) | 0x3000, RD, None),
        CpuResult::Ok(hpa(DATA + 3))
    );
    let created = mmu.stats().get(Counter::ShadowPagesCreated);
    let hits = mmu.stats().get(Counter::RootCacheHits);
    let fixed = mmu.stats().get(Counter::HiddenFaultsFixed);
    retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, PML4 << 12));
    assert_eq!(
        mmu.stats().get(Counter::ShadowPagesCreated),
        created,
        "switch back created shadow pages"
    );
    assert_eq!(mmu.stats().get(Counter::RootCacheHits), hits + 1);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x3000, RD, None),
        CpuResult::Ok(hpa(DATA + 3))
    );
    assert_eq!(
        mmu.stats().get(Counter::HiddenFaultsFixed),
        fixed,
        "cached root had to refault"
    );
    finish(&mut mmu, &mut host);
}

#[test]
fn root_cache_is_pcid_aware_and_bounded() {
    let mem = long_guest();
    let mut host = Host::new();
    let cfg = Config {
        root_cache_size: 2,
        ..Config::DEFAULT
    };
    let mut mmu = long_mmu(cfg, &mem, &mut host);
    retry_oom(&mut host, |h| {
        mmu.set_mode(
            h,
            &mem,
            CR0_PE | CR0_PG | CR0_WP,
            CR4_PAE | CR4_PCIDE,
            EFER_LME | EFER_LMA | EFER_NXE,
        )
    });
    let miss0 = mmu.stats().get(Counter::RootCacheMisses);
    // Same tables, different PCIDs: different address spaces.
    for pcid in 1..=2u64 {
        retry_oom(&mut host, |h| {
            mmu.set_cr3(h, &mem, (PML4 << 12) | pcid | (1 << 63))
        });
    }
    assert_eq!(mmu.stats().get(Counter::RootCacheMisses), miss0 + 2);
    assert!(mmu.cached_roots() <= 2);
    let hits = mmu.stats().get(Counter::RootCacheHits);
    let flushes = mmu.stats().get(Counter::TlbFlushes);
    retry_oom(&mut host, |h| {
        mmu.set_cr3(h, &mem, (PML4 << 12) | 1 | (1 << 63))
    });
    assert_eq!(mmu.stats().get(Counter::RootCacheHits), hits + 1);
    assert_eq!(
        mmu.stats().get(Counter::TlbFlushes),
        flushes,
        "no-flush CR3 write flushed"
    );
    retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, (PML4 << 12) | 1));
    assert_eq!(mmu.stats().get(Counter::TlbFlushes), flushes + 1);
    // INVPCID checks.
    assert_eq!(
        mmu.invpcid(&mem, InvpcidKind::Single, 0x1000, 0),
        CtlOutcome::Gp
    );
    assert_eq!(
        mmu.invpcid(&mem, InvpcidKind::Address, 1, 0x3000),
        CtlOutcome::Ok
    );
    assert_eq!(
        mmu.invpcid(&mem, InvpcidKind::AllExceptGlobal, 0, 0),
        CtlOutcome::Ok
    );
    finish(&mut mmu, &mut host);
}

/// CR3 switches round `spaces` 4-level address spaces, `rounds` times; returns the root
/// cache misses of the last round.
fn cr3_rounds(spaces: u64, rounds: u32, cfg: Config) -> (u64, usize) {
    let mem = GMem::new(1024, &[]);
    let mut b = Builder::new(3);
    let cr3s: Vec<u64> = (0..spaces).map(|_| b.root()).collect();
    for &c in &cr3s {
        let f = b.alloc();
        b.map(&mem, c, 0x40_0000, f);
    }
    let mut host = Host::new();
    let mut mmu = start(3, cfg, &mem, &mut host, cr3s[0]);
    let mut last = 0;
    for _ in 0..rounds {
        let m0 = mmu.stats().get(Counter::RootCacheMisses);
        for &c in &cr3s {
            retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, c));
            assert!(matches!(
                cpu_access(&mut mmu, &mut host, &mem, 0x40_0000, RD, None),
                CpuResult::Ok(_)
            ));
        }
        last = mmu.stats().get(Counter::RootCacheMisses) - m0;
    }
    let cached = mmu.cached_roots();
    finish(&mut mmu, &mut host);
    (last, cached)
}

#[test]
fn root_cache_grows_to_the_address_spaces_the_guest_comes_back_to() {
    let cfg = Config {
        root_cache_size: MAX_ROOT_CACHE,
        ..Config::DEFAULT
    };
    // 48 spaces, more than the 16 the cache starts with: the second round comes back to
    // evicted roots and grows it, the third hits every time.
    assert_eq!(cr3_rounds(48, 3, cfg), (0, 48));
    // Spaces used once are not kept beyond the starting size.
    let (_, cached) = cr3_rounds(40, 1, cfg);
    assert_eq!(cached, 16);
    // The configured bound holds.
    let small = Config {
        root_cache_size: 8,
        ..Config::DEFAULT
    };
    assert_eq!(cr3_rounds(12, 3, small), (12, 8));
}

#[test]
fn pae_root_page_reused_keeps_no_pdpte_of_the_old_root() {
    // Address space A maps gva 3 GiB (its PDPTE 3 is present); B and C do not. With one
    // cached root, C's root is built in the PAE root page A's root gave back when B's
    // root replaced it.
    let mem = GMem::new(64, &[]);
    let mut b = Builder::new(2);
    let (a, bb, c) = (b.root(), b.root(), b.root());
    let fa = b.alloc();
    b.map(&mem, a, 3 << 30, fa);
    let fb = b.alloc();
    b.map(&mem, bb, 0, fb);
    b.map(&mem, c, 0, fb);
    let mut host = Host::new();
    let cfg = Config {
        root_cache_size: 1,
        ..Config::DEFAULT
    };
    let mut mmu = start(2, cfg, &mem, &mut host, a);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 3 << 30, RD, None),
        CpuResult::Ok(hpa(fa))
    );
    retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, bb));
    retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, c));
    assert!(
        matches!(
            cpu_access(&mut mmu, &mut host, &mem, 3 << 30, RD, None),
            CpuResult::Fault(_)
        ),
        "C reached A's page through a stale PDPTE"
    );
    finish(&mut mmu, &mut host);
}

#[test]
fn unsync_stale_until_invlpg_and_np_to_p_without_flush() {
    let mem = long_guest();
    let mut host = Host::new();
    let mut mmu = long_mmu(Config::DEFAULT, &mem, &mut host);
    let g2 = 2 << 20;
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, g2, RD, None),
        CpuResult::Ok(hpa(DATA + 20))
    );
    assert!(mmu.is_shadowed(PT2));
    // Guest writes PT2[0] through its mapping at gva 100 << 12: a leaf table goes unsync.
    let r = cpu_access(
        &mut mmu,
        &mut host,
        &mem,
        100 << 12,
        WR,
        Some((((DATA + 21) << 12) | PWU, 8)),
    );
    assert!(matches!(r, CpuResult::Ok(_)), "{r:?}");
    assert_eq!(mmu.stats().get(Counter::Unsync), 1);
    // Present -> present without INVLPG: the old translation may stay (it does here).
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, g2, RD, None),
        CpuResult::Ok(hpa(DATA + 20))
    );
    mmu.invlpg(&mem, g2);
    assert_eq!(mmu.stats().get(Counter::InvlpgResync), 1);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, g2, RD, None),
        CpuResult::Ok(hpa(DATA + 21))
    );
    // Not present -> present needs no flush.
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, g2 + 0x1000, RD, None),
        CpuResult::Fault(PFERR_P ^ PFERR_P)
    );
    let r = cpu_access(
        &mut mmu,
        &mut host,
        &mem,
        (100 << 12) + 8,
        WR,
        Some((((DATA + 22) << 12) | PWU, 8)),
    );
    assert!(matches!(r, CpuResult::Ok(_)));
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, g2 + 0x1000, RD, None),
        CpuResult::Ok(hpa(DATA + 22))
    );
    // A CR3 write resyncs and write-protects again.
    let resync = mmu.stats().get(Counter::Resync);
    retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, PML4 << 12));
    assert_eq!(mmu.stats().get(Counter::Resync), resync + 1);
    let r = cpu_access(
        &mut mmu,
        &mut host,
        &mem,
        100 << 12,
        WR,
        Some((((DATA + 23) << 12) | PWU, 8)),
    );
    assert!(matches!(r, CpuResult::Ok(_)));
    assert_eq!(
        mmu.stats().get(Counter::Unsync),
        2,
        "write after resync must fault and unsync again"
    );
    finish(&mut mmu, &mut host);
}

#[test]
fn invlpg_after_the_guest_repoints_a_directory_entry_resyncs_the_new_table() {
    // gva 1 GiB goes through PD_B[0]: first to PT, then (the guest rewrites the entry)
    // to PT2. The INVLPG before the change walked to PT's shadow page; the INVLPG after it
    // must reach PT2's, out of sync by then, and not reuse the earlier walk.
    let mem = long_guest();
    w8(&mem, PD_B, 0, (PT << 12) | PWU);
    let mut host = Host::new();
    let mut mmu = long_mmu(Config::DEFAULT, &mem, &mut host);
    let x = 1 << 30;
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, x, RD, None),
        CpuResult::Ok(hpa(DATA))
    );
    mmu.invlpg(&mem, x);
    // PD_B is mapped at gva 101 << 12: the write to a shadowed directory is emulated.
    let r = cpu_access(
        &mut mmu,
        &mut host,
        &mem,
        101 << 12,
        WR,
        Some(((PT2 << 12) | PWU, 8)),
    );
    assert_eq!(r, CpuResult::Emulated(PD_B << 12));
    mmu.invlpg(&mem, x);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, x, RD, None),
        CpuResult::Ok(hpa(DATA + 20))
    );
    // PT2 (mapped at gva 100 << 12) goes out of sync with a new PT2[0].
    let unsync = mmu.stats().get(Counter::Unsync);
    let r = cpu_access(
        &mut mmu,
        &mut host,
        &mem,
        100 << 12,
        WR,
        Some((((DATA + 21) << 12) | PWU, 8)),
    );
    assert!(matches!(r, CpuResult::Ok(_)), "{r:?}");
    assert_eq!(mmu.stats().get(Counter::Unsync), unsync + 1);
    mmu.invlpg(&mem, x);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, x, RD, None),
        CpuResult::Ok(hpa(DATA + 21)),
        "INVLPG missed the out-of-sync entry"
    );
    finish(&mut mmu, &mut host);
}

#[test]
fn upper_level_write_is_emulated_then_flood_unshadows() {
    let mem = long_guest();
    let mut host = Host::new();
    let mut mmu = long_mmu(Config::DEFAULT, &mem, &mut host);
    w8(&mem, PD_B, 0, (PT << 12) | PWU);
    // Use PD_B as a table (gva 1G -> PD_B[0] -> PT).
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, (1 << 30) | 0x2000, RD, None),
        CpuResult::Ok(hpa(DATA + 2))
    );
    assert!(mmu.is_shadowed(PD_B));
    // Writes to PD_B (through gva 101 << 12) are emulated, and applied at once.
    let r = cpu_access(
        &mut mmu,
        &mut host,
        &mem,
        101 << 12,
        WR,
        Some(((PT2 << 12) | PWU, 8)),
    );
    assert_eq!(r, CpuResult::Emulated(PD_B << 12));
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 1 << 30, RD, None),
        CpuResult::Ok(hpa(DATA + 20))
    );
    // Now write it repeatedly without using it: flooding unshadows the frame.
    for i in 0..3 {
        let r = cpu_access(
            &mut mmu,
            &mut host,
            &mem,
            (101 << 12) + 8 * (i + 1),
            WR,
            Some((0, 8)),
        );
        assert_eq!(r, CpuResult::Emulated((PD_B << 12) + 8 * (i + 1)));
    }
    assert_eq!(mmu.stats().get(Counter::FloodUnshadows), 1);
    assert!(!mmu.is_shadowed(PD_B));
    let r = cpu_access(
        &mut mmu,
        &mut host,
        &mem,
        (101 << 12) + 64,
        WR,
        Some((0, 8)),
    );
    assert!(
        matches!(r, CpuResult::Ok(_)),
        "unshadowed frame still write-protected: {r:?}"
    );
    // And it is shadowed again when used as a table.
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 1 << 30, RD, None),
        CpuResult::Ok(hpa(DATA + 20))
    );
    assert!(mmu.is_shadowed(PD_B));
    finish(&mut mmu, &mut host);
}

#[test]
fn flooding_a_cached_roots_table_drops_that_root() {
    let mem = long_guest();
    let mut host = Host::new();
    let mut mmu = long_mmu(Config::DEFAULT, &mem, &mut host);
    retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, PML4_B << 12));
    retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, PML4 << 12));
    let cached = mmu.cached_roots();
    assert!(mmu.is_shadowed(PML4_B));
    // The guest reuses the old PML4 frame as data (a freed address space): stores to it
    // are emulated and reported; flooding must free it although a cached root pinned it.
    for i in 0..3u64 {
        w8(&mem, PML4_B, 10 + i, 0);
        mmu.guest_wrote(&mut host, &mem, (PML4_B << 12) + 8 * (10 + i), 8);
    }
    assert!(
        !mmu.is_shadowed(PML4_B),
        "flooded table of a cached root stays write-protected"
    );
    assert_eq!(mmu.cached_roots(), cached - 1);
    assert_eq!(mmu.stats().get(Counter::FloodUnshadows), 1);
    // The current root is never dropped, and switching to the old space rebuilds it.
    let misses = mmu.stats().get(Counter::RootCacheMisses);
    retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, PML4_B << 12));
    assert_eq!(mmu.stats().get(Counter::RootCacheMisses), misses + 1);
    finish(&mut mmu, &mut host);
}

#[test]
fn unprotect_fallback_lets_the_write_through() {
    let mem = long_guest();
    let mut host = Host::new();
    let mut mmu = long_mmu(Config::DEFAULT, &mem, &mut host);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x1000, RD, None),
        CpuResult::Ok(hpa(DATA + 1))
    );
    // PD_B is an upper-level table (gva 1G): a write to it returns EmulateWrite; the
    // caller cannot emulate and unprotects instead. (A table on the writing access's own
    // translation path would be shadowed again by the retry: that needs the emulator.)
    w8(&mem, PD_B, 0, (PT << 12) | PWU);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 1 << 30, RD, None),
        CpuResult::Ok(hpa(DATA))
    );
    w8(&mem, PT, 102, (PD_B << 12) | PWU);
    let out = retry_oom(&mut host, |h| {
        mmu.page_fault(h, &mem, 102 << 12, PFERR_W, 0, false)
    });
    assert_eq!(out, PfOutcome::EmulateWrite { gpa: PD_B << 12 });
    assert!(mmu.unprotect(&mut host, &mem, 0x1234, PD_B << 12));
    assert!(!mmu.is_shadowed(PD_B));
    assert!(matches!(
        cpu_access(&mut mmu, &mut host, &mem, 102 << 12, WR, None),
        CpuResult::Ok(_)
    ));
    finish(&mut mmu, &mut host);
}

#[test]
fn large_pages_are_split_and_invlpg_drops_the_whole_page() {
    let mem = GMem::new(40, &[]);
    w8(&mem, PML4, 0, (PDPT << 12) | PWU);
    w8(&mem, PDPT, 0, PTE_PS | PWU); // 1 GiB page at gpa 0, clean
    let mut host = Host::new();
    let mut mmu = long_mmu(Config::DEFAULT, &mem, &mut host);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x5000, RD, None),
        CpuResult::Ok(hpa(5))
    );
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x6000, RD, None),
        CpuResult::Ok(hpa(6))
    );
    assert_eq!(mem.read(PDPT << 12, 8) & (PTE_A | PTE_D), PTE_A);
    // Clean large page: first write faults (dirty emulation) and sets D.
    let fixed = mmu.stats().get(Counter::HiddenFaultsFixed);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x6000, WR, None),
        CpuResult::Ok(hpa(6))
    );
    assert_eq!(mmu.stats().get(Counter::HiddenFaultsFixed), fixed + 1);
    assert_eq!(mem.read(PDPT << 12, 8) & PTE_D, PTE_D);
    // INVLPG anywhere in the 1 GiB page drops the split copy.
    mmu.invlpg(&mem, 0x3000_0000);
    let fixed = mmu.stats().get(Counter::HiddenFaultsFixed);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x5000, RD, None),
        CpuResult::Ok(hpa(5))
    );
    assert_eq!(mmu.stats().get(Counter::HiddenFaultsFixed), fixed + 1);
    finish(&mut mmu, &mut host);
}

/// INVLPG anywhere in a 4 MiB page of 32-bit paging drops the whole page: the shadow
/// splits it over two entries of 2 MiB (a direct shadow page each), and both go.
#[test]
fn invlpg_drops_both_halves_of_a_32bit_large_page() {
    let mem = GMem::new(2048, &[]);
    let pd = 1u64;
    // Directory entry 2: gva 0x80_0000..0xc0_0000 is a 4 MiB page at gpa 0.
    let set_pde = |gpa: u64| mem.write((pd << 12) + 2 * 4, 4, gpa | PTE_PS | PWU);
    set_pde(0);
    let mut host = Host::new();
    let mut mmu = start(1, Config::DEFAULT, &mem, &mut host, pd << 12);
    let (cr0, _, _) = mode_regs(1);
    let pse = retry_oom(&mut host, |h| mmu.set_mode(h, &mem, cr0, CR4_PSE, 0));
    assert_eq!(pse, CtlOutcome::Ok);
    for (gva, gfn) in [(0x80_5000, 5), (0xa0_5000, 0x205)] {
        assert_eq!(
            cpu_access(&mut mmu, &mut host, &mem, gva, RD, None),
            CpuResult::Ok(hpa(gfn))
        );
    }
    // The guest moves the page to gpa 4 MiB and invalidates its first half.
    set_pde(0x40_0000);
    mmu.invlpg(&mem, 0x80_5000);
    for (gva, gfn) in [(0xa0_5000, 0x605), (0x80_5000, 0x405)] {
        assert_eq!(
            cpu_access(&mut mmu, &mut host, &mem, gva, RD, None),
            CpuResult::Ok(hpa(gfn)),
            "{gva:#x} after INVLPG"
        );
    }
    finish(&mut mmu, &mut host);
}

#[test]
fn shadow_page_limit_reclaims() {
    let mem = GMem::new(200, &[]);
    w8(&mem, PML4, 0, (PDPT << 12) | PWU);
    w8(&mem, PDPT, 0, (PD << 12) | PWU);
    // 100 page tables, each mapping one data frame.
    for i in 0..100u64 {
        w8(&mem, PD, i, ((10 + i) << 12) | PWU);
        w8(&mem, 10 + i, 0, ((150 + i % 40) << 12) | PWU);
    }
    let mut host = Host::new();
    let cfg = Config {
        max_shadow_pages: 64,
        ..Config::DEFAULT
    };
    let mut mmu = long_mmu(cfg, &mem, &mut host);
    for round in 0..2 {
        for i in 0..100u64 {
            assert_eq!(
                cpu_access(&mut mmu, &mut host, &mem, i << 21, RD, None),
                CpuResult::Ok(hpa(150 + i % 40)),
                "round {round}"
            );
            assert!(mmu.shadow_pages() <= 64);
        }
    }
    assert!(mmu.stats().get(Counter::ShadowPagesReclaimed) > 0);
    finish(&mut mmu, &mut host);
}

/// Runs a fixed scenario in every mode; returns the results of its accesses.
fn scenario(mode: u8, host: &mut Host) -> Vec<CpuResult> {
    let mem = match mode {
        3 => long_guest(),
        _ => {
            let mem = GMem::new(40, &[39]);
            if mode == 2 {
                w8(&mem, PML4, 0, (PD << 12) | PTE_P);
                w8(&mem, PML4, 1, (PD_B << 12) | PTE_P);
                w8(&mem, PML4_B, 0, (PD << 12) | PTE_P);
                w8(&mem, PD, 0, (PT << 12) | PWU);
                w8(&mem, PD, 1, PTE_PS | PWU);
                w8(&mem, PD_B, 0, (PT2 << 12) | PWU);
                for i in 0..16 {
                    w8(&mem, PT, i, ((DATA + i) << 12) | PWU);
                }
                w8(&mem, PT, 100, (PT2 << 12) | PWU);
                w8(&mem, PT2, 0, ((DATA + 20) << 12) | PWU);
            } else {
                let w4 = |g: u64, i: u64, v: u64| mem.write((g << 12) + 4 * i, 4, v);
                w4(PML4, 0, (PT << 12) | PWU);
                w4(PML4, 1, PTE_PS | PWU);
                w4(PML4, 256, (PT2 << 12) | PWU);
                w4(PML4_B, 0, (PT << 12) | PWU);
                for i in 0..16 {
                    w4(PT, i, ((DATA + i) << 12) | PWU);
                }
                w4(PT, 100, (PT2 << 12) | PWU);
                w4(PT2, 0, ((DATA + 20) << 12) | PWU);
            }
            mem
        }
    };
    let mut mmu = Mmu::new(Config::DEFAULT);
    retry_oom(host, |h| mmu.set_cr3(h, &mem, PML4 << 12));
    let (cr4, efer) = match mode {
        3 => (CR4_PAE, EFER_LME | EFER_LMA | EFER_NXE),
        2 => (CR4_PAE, EFER_NXE),
        1 => (CR4_PSE, 0),
        _ => (0, 0),
    };
    let cr0 = CR0_PE | CR0_WP | if mode == 0 { 0 } else { CR0_PG };
    assert_eq!(
        retry_oom(host, |h| mmu.set_mode(h, &mem, cr0, cr4, efer)),
        CtlOutcome::Ok
    );
    let mut out = vec![];
    let esz = if mode == 1 { 4 } else { 8 };
    for (gva, a, store) in [
        (0x3000u64, RD, None),
        (0x4000, WR, None),
        (0x40_3000, RD, None),
        (if mode == 1 { 1 << 30 } else { 2 << 20 }, RD, None),
        (100 << 12, WR, Some((((DATA + 21) << 12) | PWU, esz))),
        (0x3000_0000, RD, None),
    ] {
        out.push(cpu_access(&mut mmu, host, &mem, gva, a, store));
    }
    retry_oom(host, |h| mmu.set_cr3(h, &mem, PML4_B << 12));
    out.push(cpu_access(&mut mmu, host, &mem, 0x3000, RD, None));
    retry_oom(host, |h| mmu.set_cr3(h, &mem, PML4 << 12));
    out.push(cpu_access(&mut mmu, host, &mem, 0x5000, WR, None));
    assert_eq!(
        retry_oom(host, |h| mmu.set_mode(h, &mem, CR0_PE, 0, 0)),
        CtlOutcome::Ok
    );
    out.push(cpu_access(&mut mmu, host, &mem, 0x7000, RD, None));
    assert_eq!(
        retry_oom(host, |h| mmu.set_mode(h, &mem, cr0, cr4, efer)),
        CtlOutcome::Ok
    );
    out.push(cpu_access(&mut mmu, host, &mem, 0x3000, RD, None));
    finish(&mut mmu, host);
    out
}

#[test]
fn running_dry_at_every_allocation_point() {
    for mode in 0..4u8 {
        let mut host = Host::new();
        let want = scenario(mode, &mut host);
        let total = host.allocs;
        assert!(total > 5);
        for n in 1..=total {
            let mut host = Host::new();
            host.fail_at = Some(n);
            let got = scenario(mode, &mut host);
            assert_eq!(
                got, want,
                "mode {mode}: results differ when allocation {n} fails"
            );
            assert_eq!(
                host.oom_events, 1,
                "mode {mode}: allocation {n} failure not reported exactly once"
            );
        }
    }
}

#[test]
fn nothing_allocated_fails_cleanly_and_recovers() {
    let mem = long_guest();
    let mut host = Host::new();
    let mut mmu = Mmu::new(Config::DEFAULT);
    host.dry = true;
    assert_eq!(
        mmu.set_mode(&mut host, &mem, CR0_PE, 0, 0),
        Err(MmuError::NeedMemory)
    );
    assert_eq!(mmu.root_hpa(), 0);
    host.dry = false;
    assert_eq!(
        mmu.set_mode(&mut host, &mem, CR0_PE, 0, 0),
        Ok(CtlOutcome::Ok)
    );
    assert!(mmu.root_hpa() != 0 && mmu.root_hpa() < 1 << 32);
    finish(&mut mmu, &mut host);
}

#[test]
fn pae_bad_pdpte_is_gp_and_changes_nothing() {
    let mem = GMem::new(16, &[]);
    w8(&mem, 1, 0, (2 << 12) | PTE_P);
    w8(&mem, 3, 0, (2 << 12) | PTE_P | PTE_W); // R/W is reserved in a PAE PDPTE
    let mut host = Host::new();
    let mut mmu = Mmu::new(Config::DEFAULT);
    retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, 1 << 12));
    assert_eq!(
        retry_oom(&mut host, |h| mmu.set_mode(
            h,
            &mem,
            CR0_PE | CR0_PG,
            CR4_PAE,
            0
        )),
        CtlOutcome::Ok
    );
    let root = mmu.root_hpa();
    assert_eq!(
        retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, 3 << 12)),
        CtlOutcome::Gp
    );
    assert_eq!(mmu.root_hpa(), root);
    assert_eq!(mmu.paging().cr3, 1 << 12);
    // Paging enable with a bad PDPT is #GP as well.
    retry_oom(&mut host, |h| mmu.set_mode(h, &mem, CR0_PE, CR4_PAE, 0));
    retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, 3 << 12));
    assert_eq!(
        retry_oom(&mut host, |h| mmu.set_mode(
            h,
            &mem,
            CR0_PE | CR0_PG,
            CR4_PAE,
            0
        )),
        CtlOutcome::Gp
    );
    assert_eq!(mmu.paging().mode, GuestMode::Off);
    finish(&mut mmu, &mut host);
}

#[test]
fn hw_state_contract() {
    let mem = long_guest();
    let mut host = Host::new();
    let mut mmu = Mmu::new(Config::DEFAULT);
    retry_oom(&mut host, |h| {
        mmu.set_mode(h, &mem, CR0_PE, CR4_SMEP | CR4_SMAP, 0)
    });
    let hw = mmu.hw_state();
    assert_eq!(hw.cr0_set, CR0_PG | CR0_WP);
    assert_eq!(hw.cr4 & hw.cr4_mask, CR4_PAE, "paging off: no SMEP/SMAP");
    assert_eq!(hw.efer, EFER_NXE);
    assert!(hw.cr3 < 1 << 32);
    retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, PML4 << 12));
    retry_oom(&mut host, |h| {
        mmu.set_mode(
            h,
            &mem,
            CR0_PE | CR0_PG,
            CR4_PAE | CR4_SMEP | CR4_SMAP,
            EFER_LME | EFER_LMA,
        )
    });
    let hw = mmu.hw_state();
    assert_eq!(hw.cr4, CR4_PAE | CR4_SMEP | CR4_SMAP);
    assert_eq!(hw.efer, EFER_NXE | EFER_LME | EFER_LMA);
    assert_eq!(hw.cr3, mmu.root_hpa());
    finish(&mut mmu, &mut host);
}

#[test]
fn counters_are_a_fixed_named_list() {
    let mmu = Mmu::new(Config::DEFAULT);
    let list = mmu.counters();
    assert_eq!(list.len(), NUM_COUNTERS);
    let names: std::collections::HashSet<_> = list.iter().map(|c| c.0).collect();
    assert_eq!(names.len(), NUM_COUNTERS);
    assert!(names.contains("root_cache_hits") && names.contains("flood_unshadows"));
    // CREATE_VCPU builds the Mmu on the kernel stack (16 KiB) before boxing it.
    assert!(
        core::mem::size_of::<Mmu>() <= 2304,
        "Mmu must stay small (kernel stack): {} bytes",
        core::mem::size_of::<Mmu>()
    );
}

/// `long_guest` with PT[1..8] set up for prefetch: 1 accessed and dirty, 2 accessed only,
/// 3 accessed and dirty, 4 not accessed (prefetch stops there, as KVM's), 5..7 accessed
/// and dirty; PT[9] accessed and dirty (outside the group of 8 around 0).
fn prefetch_guest() -> GMem {
    let mem = long_guest();
    let ad = PTE_A | PTE_D;
    for (i, flags) in [
        (1, ad),
        (2, PTE_A),
        (3, ad),
        (4, 0),
        (5, ad),
        (6, ad),
        (7, ad),
        (9, ad),
    ] {
        w8(&mem, PT, i, ((DATA + i) << 12) | PWU | flags);
    }
    mem
}

fn prefetch_cfg(n: u16) -> Config {
    Config {
        prefetch: n,
        host_maxphyaddr: 46,
        gnp_bypass: true,
        ..Config::DEFAULT
    }
}

/// Whether the shadow maps `gva` for `a` right now (no fault).
fn mapped(mmu: &Mmu, host: &Host, gva: u64, a: Acc) -> bool {
    hw_walk(mmu, host, gva, a).is_ok()
}

#[test]
fn prefetch_maps_accessed_neighbours_and_leaves_guest_ad_alone() {
    let mem = prefetch_guest();
    let before: Vec<u64> = (1..8).map(|i| mem.read((PT << 12) + i * 8, 8)).collect();
    let mut host = Host::new();
    let mut mmu = long_mmu(prefetch_cfg(8), &mem, &mut host);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0, WR, None),
        CpuResult::Ok(hpa(DATA))
    );
    assert_eq!(mmu.stats().get(Counter::Prefetches), 3);
    // Dirty neighbours writable, the clean one read-only, nothing from the first entry
    // that cannot be prefetched on.
    assert!(mapped(&mmu, &host, 0x1000, WR));
    assert!(mapped(&mmu, &host, 0x2000, RD) && !mapped(&mmu, &host, 0x2000, WR));
    assert!(mapped(&mmu, &host, 0x3000, WR));
    for gva in [0x4000, 0x5000, 0x9000] {
        assert!(!mapped(&mmu, &host, gva, RD), "{gva:#x} prefetched");
    }
    let after: Vec<u64> = (1..8).map(|i| mem.read((PT << 12) + i * 8, 8)).collect();
    assert_eq!(before, after, "prefetch changed guest A/D bits");
    let faults = mmu.stats().get(Counter::HiddenFaultsFixed);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x3000, WR, None),
        CpuResult::Ok(hpa(DATA + 3))
    );
    assert_eq!(
        mmu.stats().get(Counter::HiddenFaultsFixed),
        faults,
        "refaulted"
    );
    finish(&mut mmu, &mut host);
}

#[test]
fn prefetch_off_maps_only_the_faulting_entry() {
    let mem = prefetch_guest();
    let mut host = Host::new();
    let mut mmu = long_mmu(prefetch_cfg(0), &mem, &mut host);
    assert_eq!(mmu.config().prefetch, 0);
    cpu_access(&mut mmu, &mut host, &mem, 0, WR, None);
    assert!(!mapped(&mmu, &host, 0x1000, RD));
    assert_eq!(mmu.stats().get(Counter::Prefetches), 0);
    finish(&mut mmu, &mut host);
}

#[test]
fn prefetch_group_is_aligned_and_sized_by_config() {
    let mem = prefetch_guest();
    for i in 8..16 {
        w8(&mem, PT, i, ((DATA + i) << 12) | PWU | PTE_A | PTE_D);
    }
    let mut host = Host::new();
    // 12 rounds down to 8: a fault on entry 9 fills 8 and 10..15, not 0..7.
    let mut mmu = long_mmu(prefetch_cfg(12), &mem, &mut host);
    assert_eq!(mmu.config().prefetch, 8);
    cpu_access(&mut mmu, &mut host, &mem, 0x9000, RD, None);
    assert_eq!(mmu.stats().get(Counter::Prefetches), 7);
    assert!(mapped(&mmu, &host, 0x8000, RD) && mapped(&mmu, &host, 0xf000, RD));
    assert!(!mapped(&mmu, &host, 0x7000, RD));
    mmu.teardown(&mut host);
    // 16: entries 0..15 around 3, up to the first that cannot be prefetched (0: not
    // accessed yet).
    let mut mmu = long_mmu(prefetch_cfg(16), &mem, &mut host);
    cpu_access(&mut mmu, &mut host, &mem, 0x3000, RD, None);
    assert!(!mapped(&mmu, &host, 0x1000, RD), "entry 0 stops the group");
    mmu.teardown(&mut host);
    // Entries 0 and 4 accessed too: the whole group.
    w8(&mem, PT, 0, (DATA << 12) | PWU | PTE_A);
    w8(&mem, PT, 4, ((DATA + 4) << 12) | PWU | PTE_A);
    let mut mmu = long_mmu(prefetch_cfg(16), &mem, &mut host);
    cpu_access(&mut mmu, &mut host, &mem, 0x3000, RD, None);
    assert_eq!(mmu.stats().get(Counter::Prefetches), 15);
    for i in 0..16 {
        assert!(mapped(&mmu, &host, i << 12, RD), "entry {i}");
    }
    assert!(!mapped(&mmu, &host, 16 << 12, RD));
    finish(&mut mmu, &mut host);
}

#[test]
fn prefetch_maps_shadowed_page_tables_read_only() {
    let mem = prefetch_guest();
    // PT[1] maps the page table itself, accessed and dirty.
    w8(&mem, PT, 1, (PT << 12) | PWU | PTE_A | PTE_D);
    let mut host = Host::new();
    let mut mmu = long_mmu(prefetch_cfg(8), &mem, &mut host);
    cpu_access(&mut mmu, &mut host, &mem, 0, RD, None);
    assert!(mapped(&mmu, &host, 0x1000, RD));
    assert!(
        !mapped(&mmu, &host, 0x1000, WR),
        "a shadowed table mapped writable"
    );
    finish(&mut mmu, &mut host);
}

#[test]
fn invlpg_fills_the_entry_from_the_guest() {
    for n in [0, 8] {
        let mem = prefetch_guest();
        let mut host = Host::new();
        let mut mmu = long_mmu(prefetch_cfg(n), &mem, &mut host);
        cpu_access(&mut mmu, &mut host, &mem, 0, RD, None);
        let prefetched = mmu.stats().get(Counter::Prefetches);
        assert!(!mapped(&mmu, &host, 0x9000, RD));
        mmu.invlpg(&mem, 0x9000);
        assert_eq!(mapped(&mmu, &host, 0x9000, WR), n != 0, "prefetch {n}");
        // Not accessed: not filled.
        mmu.invlpg(&mem, 0x4000);
        assert!(!mapped(&mmu, &host, 0x4000, RD));
        let filled = mmu.stats().get(Counter::Prefetches) - prefetched;
        assert_eq!(filled, u64::from(n != 0));
        finish(&mut mmu, &mut host);
    }
}

/// A 4-level guest with `n` page tables, PD[i] -> PT i, each mapping one data page at
/// gva i << 21.
fn many_tables_guest(n: u64) -> GMem {
    let mem = GMem::new((n + 8) as usize, &[]);
    let data = n + 4;
    w8(&mem, PML4, 0, (PDPT << 12) | PWU);
    w8(&mem, PDPT, 0, (PD << 12) | PWU);
    for i in 0..n {
        w8(&mem, PD, i, ((3 + i) << 12) | PWU);
        w8(&mem, 3 + i, 0, (data << 12) | PWU);
    }
    mem
}

#[test]
fn shadow_page_limit_scales_with_guest_memory() {
    let mem = many_tables_guest(100);
    let cfg = Config {
        max_shadow_pages: 64,
        ..Config::DEFAULT
    };
    for sized in [false, true] {
        let mut host = Host::new();
        let mut mmu = long_mmu(cfg, &mem, &mut host);
        if sized {
            // 200 * 64 frames (50 MiB): a limit of 200 shadow pages.
            retry_oom(&mut host, |h| {
                mmu.set_guest_frames(h, 200 * FRAMES_PER_SHADOW_PAGE)
            });
            assert_eq!(mmu.shadow_page_limit(), 200);
        } else {
            assert_eq!(mmu.shadow_page_limit(), 64);
        }
        for i in 0..100u64 {
            cpu_access(&mut mmu, &mut host, &mem, i << 21, RD, None);
        }
        let reclaimed = mmu.stats().get(Counter::ShadowPagesReclaimed);
        assert_eq!(reclaimed == 0, sized, "reclaimed {reclaimed}");
        assert!(mmu.shadow_pages() <= mmu.shadow_page_limit());
        finish(&mut mmu, &mut host);
    }
    // A fixed limit stays fixed.
    let mut host = Host::new();
    let mut mmu = Mmu::new(Config {
        scale_shadow_pages: false,
        ..cfg
    });
    retry_oom(&mut host, |h| mmu.set_guest_frames(h, 1 << 20));
    assert_eq!(mmu.shadow_page_limit(), 64);
    mmu.teardown(&mut host);
    // Never below the configured limit, capped.
    let mut host = Host::new();
    let mut mmu = Mmu::new(Config::DEFAULT);
    retry_oom(&mut host, |h| mmu.set_guest_frames(h, 1000));
    assert_eq!(mmu.shadow_page_limit(), 4096);
    retry_oom(&mut host, |h| mmu.set_guest_frames(h, u64::MAX));
    assert_eq!(mmu.shadow_page_limit(), MAX_SCALED_SHADOW_PAGES);
    assert_eq!(mmu.indexed_frames(), MAX_INDEXED_FRAMES);
    finish(&mut mmu, &mut host);
}

#[test]
fn gfn_index_grows_through_allocation_failures_and_keeps_records() {
    let mem = long_guest();
    // Every allocation of the sizing failing once in turn: 1 directory page and 3 index
    // pages for 3000 frames.
    for fail in 1..=5u64 {
        let mut host = Host::new();
        let mut mmu = long_mmu(Config::DEFAULT, &mem, &mut host);
        assert_eq!(
            cpu_access(&mut mmu, &mut host, &mem, 0x3000, RD, None),
            CpuResult::Ok(hpa(DATA + 3))
        );
        assert_eq!(mmu.rmap_len(DATA + 3), 1);
        assert!(mmu.is_shadowed(PT));
        assert_eq!(mmu.indexed_frames(), 0);
        host.fail_at = Some(host.allocs + fail);
        let r = mmu.set_guest_frames(&mut host, 3000);
        if fail <= 4 {
            assert_eq!(r, Err(MmuError::NeedMemory), "failure {fail}");
            assert_eq!(
                mmu.indexed_frames(),
                0,
                "index in use before it is complete"
            );
            // The engine still works meanwhile.
            assert_eq!(mmu.rmap_len(DATA + 3), 1);
            r.unwrap_err();
            retry_oom(&mut host, |h| mmu.set_guest_frames(h, 3000));
        } else {
            assert_eq!(r, Ok(()));
        }
        assert_eq!(mmu.indexed_frames(), 3072);
        // The records made before sizing moved into the index.
        assert_eq!(mmu.rmap_len(DATA + 3), 1);
        assert!(mmu.is_shadowed(PT));
        let w = (1 << 39) | 0x3000;
        retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, PML4_B << 12));
        assert_eq!(
            cpu_access(&mut mmu, &mut host, &mem, w, RD, None),
            CpuResult::Ok(hpa(DATA + 3))
        );
        assert_eq!(mmu.rmap_len(DATA + 3), 1, "same shadow page, one mapping");
        mmu.teardown(&mut host);
        assert_eq!(host.live(), 0, "pages leaked (failure {fail})");
    }
}

/// A recursive guest table (PML4[1] points back at the PML4) used at two levels of one
/// walk: the CPU sets A in every entry it uses (SDM vol. 3A 4.8), also in the entries
/// below the one used twice. Here the fault only links the upper shadow levels (the page
/// table's shadow page already maps the page), so nothing may depend on a later fault.
#[test]
fn recursive_entry_used_at_two_levels_gets_accessed_bits_on_every_level() {
    let mem = long_guest();
    // PML4[1] -> PML4 (as the PDPT) -> PML4[1] again (as the directory) -> PML4[2] (as
    // the directory entry) -> PT -> PT[1] -> DATA + 1.
    w8(&mem, PML4, 1, (PML4 << 12) | PWU);
    w8(&mem, PML4, 2, (PT << 12) | PWU);
    let recursive = (1 << 39) | (1 << 30) | (2 << 21) | 0x1000;
    let mut host = Host::new();
    let mut mmu = long_mmu(Config::DEFAULT, &mem, &mut host);
    // The usual path to PT[1] first: its shadow page maps DATA + 1.
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x1000, RD, None),
        CpuResult::Ok(hpa(DATA + 1))
    );
    let check = |dirty: u64| {
        assert_eq!(mem.read((PML4 << 12) + 8, 8), (PML4 << 12) | PWU | PTE_A);
        assert_eq!(mem.read((PML4 << 12) + 16, 8), (PT << 12) | PWU | PTE_A);
        let leaf = mem.read((PT << 12) + 8, 8);
        assert_eq!(leaf, ((DATA + 1) << 12) | PWU | PTE_A | dirty);
    };
    // One #PF exit does the whole walk's A bits and maps the page (as KVM's walker, which
    // retries within the exit), not a second exit after a failed update.
    let ec = hw_walk(&mmu, &host, recursive, RD).unwrap_err();
    let out = retry_oom(&mut host, |h| {
        mmu.page_fault(h, &mem, recursive, ec, 0, false)
    });
    assert_eq!(out, PfOutcome::Fixed);
    assert_eq!(hw_walk(&mmu, &host, recursive, RD), Ok(hpa(DATA + 1)));
    check(0);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, recursive, WR, None),
        CpuResult::Ok(hpa(DATA + 1))
    );
    check(PTE_D);
    finish(&mut mmu, &mut host);
}

/// Guest memory that another vCPU changes behind the engine's back: the 8-byte entry at
/// `store.0` becomes `store.1` the first time the engine looks up guest frame `trigger`
/// (the #PF path does that for the accessed page between its walk and its A/D update).
struct RacingStore<'a> {
    mem: &'a GMem,
    trigger: u64,
    store: std::cell::Cell<Option<(u64, u64)>>,
}

// SAFETY: every frame comes from `GMem`, which keeps that promise; the store goes through
// `GMem` too.
unsafe impl GuestMemory for RacingStore<'_> {
    fn frame(&self, gfn: u64) -> Option<GuestFrame> {
        if gfn == self.trigger {
            if let Some((gpa, v)) = self.store.take() {
                self.mem.write(gpa, 8, v);
            }
        }
        self.mem.frame(gfn)
    }
}

/// An entry of the walk changes between the #PF path's walk and its A/D update (another
/// vCPU's store), after the fault linked the upper shadow levels to a page-table shadow
/// page that already maps the page: the engine must not let the access through without
/// the A bits of its walk (SDM 4.8), so the CPU has to fault again and the retry sets them.
#[test]
fn entry_changed_before_the_accessed_update_makes_the_cpu_refault() {
    const PD2: u64 = 7;
    let mem = long_guest();
    // A second directory reaching PT: gva 2G + 4K -> PDPT[2] -> PD2[0] -> PT[1] -> DATA + 1.
    w8(&mem, PDPT, 2, (PD2 << 12) | PWU);
    w8(&mem, PD2, 0, (PT << 12) | PWU);
    let gva = (2 << 30) | 0x1000;
    let mut host = Host::new();
    let mut mmu = long_mmu(Config::DEFAULT, &mem, &mut host);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x1000, RD, None),
        CpuResult::Ok(hpa(DATA + 1))
    );
    let ec = hw_walk(&mmu, &host, gva, RD).unwrap_err();
    // The other vCPU sets an ignored bit (11) in PD2[0]: same translation.
    let racy = RacingStore {
        mem: &mem,
        trigger: DATA + 1,
        store: std::cell::Cell::new(Some((PD2 << 12, (PT << 12) | PWU | 1 << 11))),
    };
    let out = retry_oom(&mut host, |h| mmu.page_fault(h, &racy, gva, ec, 0, false));
    assert_eq!(out, PfOutcome::Fixed);
    assert_eq!(racy.store.get(), None, "the store did not happen");
    assert!(hw_walk(&mmu, &host, gva, RD).is_err(), "no refault");
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, gva, RD, None),
        CpuResult::Ok(hpa(DATA + 1))
    );
    assert_eq!(mem.read(PD2 << 12, 8), (PT << 12) | PWU | 1 << 11 | PTE_A);
    finish(&mut mmu, &mut host);
}
