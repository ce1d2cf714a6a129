// SPDX-License-Identifier: GPL-2.0
//! Host safety and exact-semantics tests (issues 9 and 10): every engine event has a
//! bounded cost (reverse-map chains, resync at CR3 writes), `max_shadow_pages` never
//! livelocks a guest (every instruction completes in a bounded number of engine steps
//! under root-cache and shadow-page pressure, in every paging mode), CR2 is the full
//! linear address, root-level flood counters reset on use, and the fallback for writes
//! the emulator cannot do never loops.

mod common;
use common::fixture::*;
use common::*;
use shadowvm_mmu::bits::*;
use shadowvm_mmu::*;

/// Runs one engine event and returns its result and the engine steps it took.
fn steps<T>(mmu: &mut Mmu, f: impl FnOnce(&mut Mmu) -> T) -> (T, u64) {
    let before = mmu.work_steps();
    let r = f(mmu);
    (r, mmu.work_steps() - before)
}

/// Most engine steps one #PF may take here (a reclaim zaps at most a few tables of 512
/// entries each).
const FAULT_STEPS: u64 = 4 * 1024;

/// One guest instruction on the software CPU: all of `accesses` must succeed in one pass
/// (as the CPU retires an instruction only when none of its accesses faults); after each
/// #PF exit the engine handles it and the instruction starts again. Returns the number of
/// passes; panics when the instruction does not complete within `max_passes`.
fn run_insn(
    mmu: &mut Mmu,
    host: &mut Host,
    mem: &GMem,
    accesses: &[(u64, Acc)],
    max_passes: usize,
) -> usize {
    for pass in 1..=max_passes {
        let mut faulted = false;
        for &(gva, a) in accesses {
            if let Err(ec) = hw_walk(mmu, host, gva, a) {
                let (out, n) = steps(mmu, |m| {
                    retry_oom(host, |h| m.page_fault(h, mem, gva, ec, a.cpl, a.ac))
                });
                assert!(n <= FAULT_STEPS, "one #PF took {n} engine steps");
                assert_eq!(out, PfOutcome::Fixed, "access {gva:#x} {a:?}");
                faulted = true;
                break;
            }
        }
        if !faulted {
            return pass;
        }
    }
    panic!("instruction {accesses:x?} did not complete in {max_passes} passes: livelock");
}

// ------------------------------------------------------------------ issue 9 (a)

/// One guest frame mapped by 6144 PTEs (12 page tables full of it): the reverse map stays
/// capped, and neither write-protecting the frame nor zapping a page table full of
/// entries mapping it costs more than a bounded number of engine steps.
#[test]
fn huge_rmap_chain_stays_bounded() {
    const NPT: u64 = 12;
    const TARGET: u64 = 100;
    let mem = GMem::new(128, &[]);
    let (pml4, pdpt, pd) = (1u64, 2u64, 3u64);
    w8(&mem, pml4, 0, (pdpt << 12) | PWU);
    w8(&mem, pdpt, 0, (pd << 12) | PWU);
    for t in 0..NPT {
        w8(&mem, pd, t, ((10 + t) << 12) | PWU);
        for i in 0..512 {
            w8(&mem, 10 + t, i, (TARGET << 12) | PWU);
        }
    }
    let mut host = Host::new();
    let cfg = Config {
        flood_threshold: 1,
        ..Config::DEFAULT
    };
    let mut mmu = start(3, cfg, &mem, &mut host, pml4 << 12);
    let mut worst = 0;
    for t in 0..NPT {
        for i in 0..512 {
            let gva = (t << 21) | (i << 12);
            let (r, n) = steps(&mut mmu, |m| cpu_access(m, &mut host, &mem, gva, RD, None));
            assert_eq!(r, CpuResult::Ok(hpa(TARGET)));
            worst = worst.max(n);
        }
    }
    let len = mmu.rmap_len(TARGET);
    assert!(len <= 1000, "reverse-map chain of {len} entries (cap 1000)");
    assert!(worst <= 2_000, "one fault took {worst} engine steps");
    // The frame becomes a page table: write-protecting it walks its reverse map once.
    // (The directory is shadowed: the guest's store to it exits and is emulated.)
    w8(&mem, TARGET, 0, (120 << 12) | PWU);
    w8(&mem, pd, 50, (TARGET << 12) | PWU);
    mmu.guest_wrote(&mut host, &mem, (pd << 12) + 50 * 8, 8);
    let (r, n) = steps(&mut mmu, |m| {
        cpu_access(m, &mut host, &mem, 50 << 21, RD, None)
    });
    assert!(matches!(r, CpuResult::Ok(_)), "{r:?}");
    assert!(n <= 2_000, "write-protecting a frame took {n} engine steps");
    // Zapping a page table whose 512 entries all sit in that chain: O(1) per entry.
    for t in 0..NPT {
        let ((), n) = steps(&mut mmu, |m| {
            m.guest_wrote(&mut host, &mem, (10 + t) << 12, 8)
        });
        assert!(n <= 512 * 8, "zapping a page table took {n} engine steps");
        assert!(!mmu.is_shadowed(10 + t));
    }
    // Everything still translates.
    for t in 0..NPT {
        assert_eq!(
            cpu_access(&mut mmu, &mut host, &mem, (t << 21) | 0x5000, RD, None),
            CpuResult::Ok(hpa(TARGET))
        );
    }
    finish(&mut mmu, &mut host);
}

// ------------------------------------------------------------------ issue 9 (b)

/// 200 leaf tables go out of sync; a CR3 write then resyncs at most the cap in one event,
/// and the guest still sees its current page tables (exact MOV CR3 semantics).
#[test]
fn cr3_write_resyncs_at_most_the_cap() {
    const N: u64 = 200;
    const PT0: u64 = 10; // PT0..PT0+N: leaf tables; 2 MiB each at gva t << 21
    const DATA: u64 = 300;
    const ALIAS: u64 = 600; // PD entries 256.. map the leaf tables at gva 512M + ...
    let mem = GMem::new(700, &[]);
    let (pml4, pdpt, pd, pd2) = (1u64, 2u64, 3u64, 4u64);
    w8(&mem, pml4, 0, (pdpt << 12) | PWU);
    w8(&mem, pdpt, 0, (pd << 12) | PWU);
    w8(&mem, pdpt, 1, (pd2 << 12) | PWU);
    for t in 0..N {
        w8(&mem, pd, t, ((PT0 + t) << 12) | PWU);
        w8(&mem, PT0 + t, 0, (DATA << 12) | PWU);
    }
    // Alias: gva 1G + (t << 12) maps leaf table t (through one PT per 512).
    w8(&mem, pd2, 0, (ALIAS << 12) | PWU);
    for t in 0..N {
        w8(&mem, ALIAS, t, ((PT0 + t) << 12) | PWU);
    }
    let mut host = Host::new();
    let mut mmu = start(3, Config::DEFAULT, &mem, &mut host, pml4 << 12);
    for t in 0..N {
        assert_eq!(
            cpu_access(&mut mmu, &mut host, &mem, t << 21, RD, None),
            CpuResult::Ok(hpa(DATA))
        );
    }
    // The guest rewrites entry 0 of every leaf table through the alias.
    for t in 0..N {
        let v = ((DATA + 1 + t) << 12) | PWU;
        let r = cpu_access(
            &mut mmu,
            &mut host,
            &mem,
            (1 << 30) | (t << 12),
            WR,
            Some((v, 8)),
        );
        assert!(
            matches!(r, CpuResult::Ok(_) | CpuResult::Emulated(_)),
            "{r:?}"
        );
    }
    let unsync = mmu.unsync_frames();
    assert!(unsync <= 64, "{unsync} frames out of sync");
    let resync = mmu.stats().get(Counter::Resync);
    let (_, n) = steps(&mut mmu, |m| {
        retry_oom(&mut host, |h| m.set_cr3(h, &mem, pml4 << 12))
    });
    let done = mmu.stats().get(Counter::Resync) - resync;
    assert!(done <= 64, "one CR3 write resynced {done} frames (cap 64)");
    assert!(n <= 64 * 2_000, "one CR3 write took {n} engine steps");
    // After MOV CR3 the guest sees its current tables.
    for t in 0..N {
        assert_eq!(
            cpu_access(&mut mmu, &mut host, &mem, t << 21, RD, None),
            CpuResult::Ok(hpa(DATA + 1 + t)),
            "table {t}"
        );
    }
    finish(&mut mmu, &mut host);
}

// ------------------------------------------------------------------ issue 9 (c), issue 10

/// Forward progress under pressure, in every paging mode: the root cache at its maximum,
/// the shadow-page limit at its minimum, many guest address spaces with their own tables.
/// Each "instruction" fetches across a page boundary, reads data across a page-table
/// boundary, and pushes onto a stack across a page boundary; it must complete within a
/// bounded number of passes (the 32-bit hostile guest with max_shadow_pages=64 and 16
/// cached roots never did: every fault reclaimed the page the previous one built).
fn progress_under_pressure(mode: u8) {
    const SPACES: u64 = 40;
    // With paging off the accesses below are guest-physical: back them all.
    let mem = GMem::new(if mode == 0 { 8192 } else { 1200 }, &[]);
    let mut b = Builder::new(mode);
    let data = b.alloc();
    let roots: Vec<u64> = (0..SPACES).map(|_| b.root()).collect();
    // Page-crossing fetch at 0x40_0ff8 (code 0x40_0000 and 0x40_1000), data across a
    // page-table boundary (0x7f_fff8 .. 0x80_0008: two page tables in every mode),
    // stack across a page at 0xc0_1000.
    let pages = [
        0x40_0000u64,
        0x40_1000,
        0x7f_f000,
        0x80_0000,
        0xc0_0000,
        0xc0_1000,
    ];
    for &cr3 in &roots {
        for &p in &pages {
            let f = b.alloc();
            b.map(&mem, cr3, p, f);
        }
        // Some more pages so each space has a working set beyond the instruction.
        for k in 0..4u64 {
            b.map(&mem, cr3, 0x100_0000 + (k << 22), data);
        }
    }
    assert!(b.next < 1200);
    let insn = [
        (0x40_0ff8u64, FETCH),
        (0x40_1000, FETCH),
        (0x7f_fff8, RD),
        (0x80_0000, RD),
        (0xc0_0ffc, WR),
        (0xc0_1000, WR),
    ];
    let mut host = Host::new();
    let cfg = Config {
        root_cache_size: MAX_ROOT_CACHE,
        max_shadow_pages: 64,
        ..Config::DEFAULT
    };
    let mut mmu = start(mode, cfg, &mem, &mut host, roots[0]);
    let mut worst = 0;
    for round in 0..3 {
        for (k, &cr3) in roots.iter().enumerate() {
            let (r, n) = steps(&mut mmu, |m| {
                retry_oom(&mut host, |h| m.set_cr3(h, &mem, cr3))
            });
            assert_eq!(r, CtlOutcome::Ok);
            assert!(n <= 8 * 1024, "a CR3 write took {n} engine steps");
            assert!(
                mmu.shadow_pages() <= 64,
                "limit exceeded after CR3 write: {}",
                mmu.shadow_pages()
            );
            let passes = run_insn(&mut mmu, &mut host, &mem, &insn, 40);
            worst = worst.max(passes);
            assert!(
                mmu.shadow_pages() <= 64,
                "limit exceeded: {}",
                mmu.shadow_pages()
            );
            for j in 0..4u64 {
                let gva = 0x100_0000 + (((j + k as u64 + round) % 4) << 22);
                let want = if mode == 0 { hpa(gva >> 12) } else { hpa(data) };
                assert_eq!(
                    cpu_access(&mut mmu, &mut host, &mem, gva, RD, None),
                    CpuResult::Ok(want)
                );
            }
        }
    }
    // Bounded: at most one fault per page-table level per access, plus the instruction.
    assert!(
        worst <= 1 + insn.len() * 4,
        "mode {mode}: an instruction took {worst} passes"
    );
    // Paging off needs only the identity root's direct pages: nothing to reclaim.
    if mode != 0 {
        assert!(
            mmu.stats().get(Counter::ShadowPagesReclaimed) > 0,
            "no reclaim under a 64-page limit"
        );
    }
    if mode == 1 {
        // 40 spaces of 4 pinned pages each would be 160: cached roots were dropped.
        assert!(
            mmu.stats().get(Counter::RootsEvicted) > 0,
            "no cached root evicted"
        );
    }
    finish(&mut mmu, &mut host);
}

#[test]
fn progress_under_pressure_bits32() {
    progress_under_pressure(1);
}

#[test]
fn progress_under_pressure_pae() {
    progress_under_pressure(2);
}

#[test]
fn progress_under_pressure_long4() {
    progress_under_pressure(3);
}

#[test]
fn progress_under_pressure_paging_off() {
    progress_under_pressure(0);
}

// ------------------------------------------------------------------ issue 10 item 1

/// CR2 is the full 64-bit linear address, bits 63:48 included.
#[test]
fn cr2_keeps_the_upper_bits() {
    let mem = GMem::new(16, &[]);
    let mut host = Host::new();
    let mut mmu = start(3, Config::DEFAULT, &mem, &mut host, 1 << 12);
    let gva = 0xffff_8880_0000_1000u64;
    let out = retry_oom(&mut host, |h| mmu.page_fault(h, &mem, gva, 0, 0, false));
    assert_eq!(
        out,
        PfOutcome::Inject(PageFault {
            error_code: 0,
            cr2: gva
        })
    );
    assert_eq!(
        mmu.translate(&mem, gva + 5, RD.to_engine()),
        Err(PageFault {
            error_code: 0,
            cr2: gva + 5
        })
    );
    finish(&mut mmu, &mut host);
}

// ------------------------------------------------------------------ issue 10 item 7

/// Writes to a root-level table that is used in between (a 32-bit page directory, a
/// KPTI-style user PGD switched to and used) must not count as flooding: the count
/// resets on use from the root level down, so the cached root survives.
#[test]
fn root_level_flood_count_resets_on_use() {
    for mode in [1u8, 3] {
        let mem = GMem::new(64, &[]);
        let mut b = Builder::new(mode);
        let (ra, rb) = (b.root(), b.root());
        let data = b.alloc();
        b.map(&mem, ra, 0x1000, data);
        b.map(&mem, rb, 0x1000, data);
        // A maps B's root-level table at 0x200000 (to write it).
        b.map(&mem, ra, 0x20_0000, rb >> 12);
        let mut host = Host::new();
        let mut mmu = start(mode, Config::DEFAULT, &mem, &mut host, ra);
        retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, rb));
        assert_eq!(
            cpu_access(&mut mmu, &mut host, &mem, 0x1000, RD, None),
            CpuResult::Ok(hpa(data))
        );
        retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, ra));
        let misses = mmu.stats().get(Counter::RootCacheMisses);
        let esz = b.esz();
        for i in 0..6u64 {
            // In A: write an entry of B's root table (emulated: it is shadowed and pinned).
            let gva_b = (8 + i) << if mode == 1 { 22 } else { 39 };
            let idx = 8 + i;
            let pte = b.read(&mem, rb >> 12, 0);
            let r = cpu_access(
                &mut mmu,
                &mut host,
                &mem,
                0x20_0000 + idx * esz,
                WR,
                Some((pte, esz as u32)),
            );
            assert!(matches!(r, CpuResult::Emulated(_)), "mode {mode}: {r:?}");
            // Switch to B and use the new entry: a fault through B's root table.
            retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, rb));
            assert_eq!(
                cpu_access(&mut mmu, &mut host, &mem, gva_b | 0x1000, RD, None),
                CpuResult::Ok(hpa(data))
            );
            retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, ra));
        }
        assert_eq!(
            mmu.stats().get(Counter::RootCacheMisses),
            misses,
            "mode {mode}: a used root table was taken for a flood"
        );
        assert_eq!(mmu.stats().get(Counter::FloodUnshadows), 0);
        finish(&mut mmu, &mut host);
    }
}

// ------------------------------------------------------------------ issue 10 item 6

/// The vCPU's fallback for a write the emulator cannot do: unprotect and re-enter. It
/// must end (the write goes through, or the engine says it cannot and the vCPU reports
/// an internal error) in a bounded number of steps.
fn fallback(
    mmu: &mut Mmu,
    host: &mut Host,
    mem: &GMem,
    rip: u64,
    gva: u64,
    a: Acc,
) -> Result<u64, &'static str> {
    for _ in 0..20 {
        match hw_walk(mmu, host, gva, a) {
            Ok(h) => return Ok(h),
            Err(ec) => match retry_oom(host, |h| mmu.page_fault(h, mem, gva, ec, a.cpl, a.ac)) {
                PfOutcome::Fixed => {}
                PfOutcome::EmulateWrite { gpa } => {
                    if !mmu.unprotect(host, mem, rip, gpa) {
                        return Err("internal error");
                    }
                }
                o => panic!("unexpected {o:?}"),
            },
        }
    }
    panic!("unprotect-and-retry loops");
}

#[test]
fn unemulatable_write_never_loops() {
    // 32-bit guest, every page-table write emulated (no unsync): A's page directory
    // (pinned by the current root) is mapped at 0x400000, B's (pinned by a cached root)
    // at 0x401000, and the page table of 0x400000.. maps itself at 0x402000.
    let mem = GMem::new(32, &[]);
    let mut b = Builder::new(1);
    let ra = b.root();
    let rb = b.root();
    let data = b.alloc();
    b.map(&mem, ra, 0x1000, data);
    b.map(&mem, rb, 0x1000, data);
    b.map(&mem, ra, 0x40_0000, ra >> 12);
    b.map(&mem, ra, 0x40_1000, rb >> 12);
    let pt1 = b.read(&mem, ra >> 12, 1) >> 12;
    b.map(&mem, ra, 0x40_2000, pt1);
    let mut host = Host::new();
    let cfg = Config {
        unsync: false,
        ..Config::DEFAULT
    };
    let mut mmu = start(1, cfg, &mem, &mut host, rb);
    retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, ra));
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x1000, RD, None),
        CpuResult::Ok(hpa(data))
    );
    // The current root's own page directory: cannot be unprotected.
    assert_eq!(
        fallback(&mut mmu, &mut host, &mem, 0x100, 0x40_0010, WR),
        Err("internal error")
    );
    // A cached root's page directory: the cached root goes, the write goes through.
    assert!(fallback(&mut mmu, &mut host, &mem, 0x100, 0x40_1010, WR).is_ok());
    assert!(!mmu.is_shadowed(rb >> 12));
    // The page table on the store's own translation path.
    assert_eq!(
        fallback(&mut mmu, &mut host, &mem, 0x100, 0x40_2020, WR),
        Err("internal error")
    );
    finish(&mut mmu, &mut host);
}

#[test]
fn unemulatable_write_under_wp0_smap_never_loops() {
    // CR0.WP=0 + SMAP: a supervisor write to a read-only user page is emulated; the
    // fallback cannot help (no page table involved).
    let mem = GMem::new(16, &[]);
    let mut b = Builder::new(3);
    let ra = b.root();
    let data = b.alloc();
    b.map(&mem, ra, 0x1000, data);
    let mut host = Host::new();
    let mut mmu = start(3, Config::DEFAULT, &mem, &mut host, ra);
    // Make the leaf read-only user, WP=0, SMAP on.
    let pt = b.table(&mem, ra, 0x1000, 1);
    w8(&mem, pt, 1, (data << 12) | PTE_P | PTE_U | PTE_A | PTE_D);
    let (_, cr4, efer) = mode_regs(3);
    retry_oom(&mut host, |h| {
        mmu.set_mode(h, &mem, CR0_PE | CR0_PG, cr4 | CR4_SMAP, efer)
    });
    let a = Acc { ac: true, ..WR };
    assert_eq!(
        fallback(&mut mmu, &mut host, &mem, 0x100, 0x1000, a),
        Err("internal error")
    );
    finish(&mut mmu, &mut host);
}

// ------------------------------------------------------------------ issue 10 item 8

/// An emulated store that crosses into a page that faults changes nothing: not the bytes
/// on the first page, not its A/D bits; CR2 is the address on the second page.
#[test]
fn page_crossing_emulated_write_is_all_or_nothing() {
    use shadowvm_emulate::{self as emulate, gpr, CodeSize, Env, Outcome};
    let mem = GMem::new(16, &[]);
    let mut b = Builder::new(3);
    let ra = b.root();
    let data = b.alloc();
    b.map(&mem, ra, 0x1000, data);
    let pt = b.table(&mem, ra, 0x1000, 1);
    // 0x2000: present but read-only.
    w8(&mem, pt, 2, (data << 12) | PTE_P | PTE_U);
    let mut host = Host::new();
    let mut mmu = start(3, Config::DEFAULT, &mem, &mut host, ra);
    let before = (mem.frame_copy(data), mem.frame_copy(pt));
    let insn = emulate::decode(&[0x48, 0x89, 0x07], CodeSize::Bits64).unwrap();
    let mut regs = emu_regs(0x5000);
    regs.gpr[gpr::RDI] = 0x1ffc;
    regs.gpr[gpr::RAX] = 0x1122_3344_5566_7788;
    let mut m = access::EngineAccess::new(&mut mmu, &mut host, &mem, 0, false);
    let out = emulate::execute(&insn, &mut regs, &Env::default(), &mut m, None).unwrap();
    assert_eq!(
        out,
        Outcome::Exception(emulate::Exception::Pf {
            addr: 0x2000,
            error_code: PFERR_P | PFERR_W
        })
    );
    assert_eq!(m.last_store, None);
    assert!(
        before.0 == mem.frame_copy(data),
        "first page written by a faulting store"
    );
    assert!(
        before.1 == mem.frame_copy(pt),
        "A/D bits set by a faulting store"
    );
    assert_eq!(regs.rip, 0x5000);
    finish(&mut mmu, &mut host);
}

// ------------------------------------------------------------------ issue 10 item 5

/// MMIO through the vCPU's memory ([`access::EngineAccess`]): a locked read-modify-write
/// completes (the read is an MMIO exit, the store a plain MMIO write), and a REP store
/// makes one MMIO store per exit with RCX/RDI committed each time (a second store in the
/// same instruction used to be a host error: an internal error for the guest).
#[test]
fn locked_and_rep_string_mmio_complete() {
    use shadowvm_emulate::{self as emulate, gpr, CodeSize, Env, MmioData, Outcome};
    let mem = GMem::new(16, &[]);
    let mut b = Builder::new(3);
    let ra = b.root();
    // gfn 0x100 is beyond the 16 frames of RAM: MMIO.
    b.map(&mem, ra, 0x7000, 0x100);
    let mut host = Host::new();
    let mut mmu = start(3, Config::DEFAULT, &mem, &mut host, ra);
    let regs = || emu_regs(0x5000);

    // lock xadd [rdi], eax
    let insn = emulate::decode(&[0xf0, 0x0f, 0xc1, 0x07], CodeSize::Bits64).unwrap();
    let mut r = regs();
    r.gpr[gpr::RDI] = 0x7010;
    r.gpr[gpr::RAX] = 5;
    let mut m = access::EngineAccess::new(&mut mmu, &mut host, &mem, 0, false);
    let out = emulate::execute(&insn, &mut r, &Env::default(), &mut m, None);
    let Ok(Outcome::MmioRead(req)) = out else {
        panic!("{out:?}")
    };
    assert_eq!((req.addr.linear, req.size), (0x7010, 4));
    let mut d = MmioData {
        linear: 0x7010,
        len: 4,
        data: [0; 16],
    };
    d.data[0] = 37;
    let mut m = access::EngineAccess::new(&mut mmu, &mut host, &mem, 0, false);
    assert_eq!(
        emulate::execute(&insn, &mut r, &Env::default(), &mut m, Some(&d)),
        Ok(Outcome::Done)
    );
    assert_eq!(
        m.mmio_write,
        Some((0x100_010, [42, 0, 0, 0, 0, 0, 0, 0], 4))
    );
    assert_eq!((r.gpr[gpr::RAX], r.rip), (37, 0x5004));

    // rep stosw, 3 iterations, into MMIO.
    let insn = emulate::decode(&[0x66, 0xf3, 0xab], CodeSize::Bits64).unwrap();
    let mut r = regs();
    r.gpr[gpr::RDI] = 0x7100;
    r.gpr[gpr::RCX] = 3;
    r.gpr[gpr::RAX] = 0xbeef;
    for k in 0..3u64 {
        let mut m = access::EngineAccess::new(&mut mmu, &mut host, &mem, 0, false);
        let out = emulate::execute_rep(&insn, &mut r, &Env::default(), &mut m, None, 1024);
        let want = if k < 2 {
            Outcome::RepContinue
        } else {
            Outcome::Done
        };
        assert_eq!(out, Ok(want));
        assert_eq!(
            m.mmio_write,
            Some((0x100_100 + 2 * k, [0xef, 0xbe, 0, 0, 0, 0, 0, 0], 2))
        );
        assert_eq!((r.gpr[gpr::RCX], r.gpr[gpr::RDI]), (2 - k, 0x7102 + 2 * k));
    }
    assert_eq!(r.rip, 0x5003);
    finish(&mut mmu, &mut host);
}

/// A store across a page boundary into a device window (two MMIO pages that follow each
/// other in guest-physical space) is one MMIO store; into two unrelated places it is not
/// split (a host error, which the vCPU reports as an internal error), never half done.
#[test]
fn page_crossing_mmio_store() {
    use shadowvm_emulate::{self as emulate, gpr, CodeSize, Env, Outcome};
    let mem = GMem::new(16, &[]);
    let mut b = Builder::new(3);
    let ra = b.root();
    b.map(&mem, ra, 0x7000, 0x100);
    b.map(&mem, ra, 0x8000, 0x101);
    b.map(&mem, ra, 0x9000, 0x200);
    let mut host = Host::new();
    let mut mmu = start(3, Config::DEFAULT, &mem, &mut host, ra);
    // mov [rdi], eax
    let insn = emulate::decode(&[0x89, 0x07], CodeSize::Bits64).unwrap();
    let mut r = emu_regs(0x5000);
    r.gpr[gpr::RDI] = 0x7ffe;
    r.gpr[gpr::RAX] = 0x4433_2211;
    let mut m = access::EngineAccess::new(&mut mmu, &mut host, &mem, 0, false);
    assert_eq!(
        emulate::execute(&insn, &mut r, &Env::default(), &mut m, None),
        Ok(Outcome::Done)
    );
    assert_eq!(
        m.mmio_write,
        Some((0x100_ffe, [0x11, 0x22, 0x33, 0x44, 0, 0, 0, 0], 4))
    );
    let mut r = emu_regs(0x5000);
    r.gpr[gpr::RDI] = 0x8ffe;
    let mut m = access::EngineAccess::new(&mut mmu, &mut host, &mem, 0, false);
    assert!(emulate::execute(&insn, &mut r, &Env::default(), &mut m, None).is_err());
    assert_eq!(m.mmio_write, None);
    assert_eq!(r.rip, 0x5000);
    finish(&mut mmu, &mut host);
}

// ------------------------------------------------------------------ issue 13: REP over page tables

/// A REP STOSD clearing a former page table through the vCPU's memory: the guest's tables
/// are walked once per page, not once per element, and the emulation stops right after
/// the store that makes the engine unshadow the frame (flooded), with RCX/RDI exactly
/// where the guest resumes natively. The write fault the guest's next store would take
/// then makes the shadow entry writable (what the vCPU does ahead of time).
#[test]
fn rep_store_over_page_table_walks_once_per_page_and_stops_when_unshadowed() {
    use shadowvm_emulate::{self as emulate, gpr, CodeSize, Env, Outcome};
    let mem = GMem::new(32, &[]);
    let mut b = Builder::new(3);
    let ra = b.root();
    let data = b.alloc();
    b.map(&mem, ra, 0x40_0000, data);
    // The level-1 table mapping 0x40_0000, and a window onto it at 0x20_0000.
    let pt = b.table(&mem, ra, 0x40_0000, 1);
    b.map(&mem, ra, 0x20_0000, pt);
    let stosd = emulate::decode(&[0xf3, 0xab], CodeSize::Bits64).unwrap();
    let regs = |rdi: u64, rcx: u64| {
        let mut r = emu_regs(0x5000);
        r.gpr[gpr::RDI] = rdi;
        r.gpr[gpr::RCX] = rcx;
        r
    };
    for threshold in [3u8, 255] {
        let cfg = Config {
            flood_threshold: threshold,
            ..Config::DEFAULT
        };
        b.map(&mem, ra, 0x40_0000, data);
        let mut host = Host::new();
        let mut mmu = start(3, cfg, &mem, &mut host, ra);
        // A read of 0x40_0000 shadows its table.
        let out = retry_oom(&mut host, |h| {
            mmu.page_fault(h, &mem, 0x40_0000, 0, 0, false)
        });
        assert_eq!(out, PfOutcome::Fixed);
        assert!(mmu.is_shadowed(pt));
        let count = if threshold == 3 { 1024 } else { 200 };
        let mut r = regs(0x20_0000, count);
        let mut m = access::EngineAccess::new(&mut mmu, &mut host, &mem, 0, false);
        let out = emulate::execute_rep(&stosd, &mut r, &Env::default(), &mut m, None, 1024);
        let (walks, pt_writes, native) = (m.walks, m.pt_writes, m.unshadowed);
        assert_eq!(walks, 1, "one walk for the page");
        if threshold == 3 {
            assert_eq!(out, Ok(Outcome::RepContinue));
            assert!(native && !mmu.is_shadowed(pt));
            assert_eq!(
                (pt_writes, r.gpr[gpr::RCX], r.gpr[gpr::RDI]),
                (3, 1021, 0x20_000c)
            );
            assert_eq!(r.rip, 0x5000);
            // The guest's next store there: one write fault makes the entry writable.
            let ec = PFERR_P | PFERR_W;
            let out = retry_oom(&mut host, |h| {
                mmu.page_fault(h, &mem, 0x20_000c, ec, 0, false)
            });
            assert_eq!(out, PfOutcome::Fixed);
            assert_eq!(hw_walk(&mmu, &host, 0x20_000c, WR), Ok(hpa(pt) + 0xc));
        } else {
            // Fewer stores than the flood threshold: all emulated, each dropping its entry.
            assert_eq!(out, Ok(Outcome::Done));
            assert!(!native && mmu.is_shadowed(pt));
            assert_eq!(
                (pt_writes, r.gpr[gpr::RCX], r.gpr[gpr::RDI]),
                (200, 0, 0x20_0320)
            );
            assert_eq!(r.rip, 0x5002);
            assert!(mem.frame_copy(pt)[..100].iter().all(|&e| e == 0));
            assert!(hw_walk(&mmu, &host, 0x40_0000, RD).is_err());
        }
        finish(&mut mmu, &mut host);
    }

    // DF=1 across a page boundary, down from the bottom of the table's window into the
    // page below it, in a chunk of 4: one walk per page, two in all.
    let below = b.alloc();
    b.map(&mem, ra, 0x1f_f000, below);
    let cfg = Config {
        flood_threshold: 255,
        ..Config::DEFAULT
    };
    b.map(&mem, ra, 0x40_0000, data);
    let mut host = Host::new();
    let mut mmu = start(3, cfg, &mem, &mut host, ra);
    let out = retry_oom(&mut host, |h| {
        mmu.page_fault(h, &mem, 0x40_0000, 0, 0, false)
    });
    assert_eq!(out, PfOutcome::Fixed);
    let mut r = regs(0x20_0008, 6);
    r.rflags |= 1 << 10;
    r.gpr[gpr::RAX] = 0x5a5a_5a5a;
    let mut m = access::EngineAccess::new(&mut mmu, &mut host, &mem, 0, false);
    let out = emulate::execute_rep(&stosd, &mut r, &Env::default(), &mut m, None, 4);
    assert_eq!((out, m.walks), (Ok(Outcome::RepContinue), 2));
    assert_eq!((r.gpr[gpr::RCX], r.gpr[gpr::RDI]), (2, 0x1f_fff8));
    assert_eq!(mem.read((below << 12) + 0xffc, 4), 0x5a5a_5a5a);
    assert_eq!(mem.read((below << 12) + 0xff8, 4), 0);

    // Upwards into a page that is not mapped (0x20_1000): the stores before it stay done,
    // the #PF has CR2 = the first byte of that page, RCX/RDI count the elements done.
    let mut r = regs(0x20_0ff8, 5);
    r.gpr[gpr::RAX] = 0x6b6b_6b6b;
    let mut m = access::EngineAccess::new(&mut mmu, &mut host, &mem, 0, false);
    let out = emulate::execute_rep(&stosd, &mut r, &Env::default(), &mut m, None, 1024);
    let pf = emulate::Exception::Pf {
        addr: 0x20_1000,
        error_code: PFERR_W,
    };
    assert_eq!((out, m.walks), (Ok(Outcome::Exception(pf)), 1));
    assert_eq!(
        (r.gpr[gpr::RCX], r.gpr[gpr::RDI], r.rip),
        (3, 0x20_1000, 0x5000)
    );
    assert_eq!(mem.read((pt << 12) + 0xff8, 8), 0x6b6b_6b6b_6b6b_6b6b);
    finish(&mut mmu, &mut host);
}

// ------------------------------------------------------------------ issue 13: TLB flush reports

/// What the engine reports to the vCPU for its TLB (with VPIDs the TLB outlives VM
/// entries): nothing for changes that only add entries or permissions; one leaf for the
/// one entry INVLPG resyncs; everything for a root switch, a store into a shadowed table
/// that drops more than one entry, or a split large page that INVLPG drops.
#[test]
fn tlb_flush_reports() {
    use shadowvm_emulate::{self as emulate, gpr, CodeSize, Env, Outcome};
    let mem = GMem::new(64, &[]);
    let mut b = Builder::new(3);
    let ra = b.root();
    let rb = b.root();
    let (f1, f2) = (b.alloc(), b.alloc());
    b.map(&mem, ra, 0x1000, f1);
    b.map(&mem, ra, 0x2000, f2);
    b.map(&mem, rb, 0x1000, f2);
    let pt = b.table(&mem, ra, 0x1000, 1);
    // A writable window onto the level-1 table, in another table.
    b.map(&mem, ra, 0x40_0000, pt);
    let mut host = Host::new();
    let mut mmu = start(3, Config::DEFAULT, &mem, &mut host, ra);
    assert_eq!(mmu.take_tlb_flush(), TlbFlush::All, "the first root");
    assert_eq!(mmu.take_tlb_flush(), TlbFlush::None, "taken");
    let fault = |mmu: &mut Mmu, host: &mut Host, gva: u64, ec: u32| {
        retry_oom(host, |h| mmu.page_fault(h, &mem, gva, ec, 0, false))
    };
    // Faults that fill entries or add write permission.
    assert_eq!(fault(&mut mmu, &mut host, 0x1000, 0), PfOutcome::Fixed);
    assert_eq!(fault(&mut mmu, &mut host, 0x2000, 0), PfOutcome::Fixed);
    assert_eq!(
        fault(&mut mmu, &mut host, 0x1000, PFERR_W | PFERR_P),
        PfOutcome::Fixed
    );
    assert_eq!(mmu.take_tlb_flush(), TlbFlush::None, "fills and upgrades");
    // CR3 to another address space and back (a cached root): each switch flushes.
    assert_eq!(
        retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, rb)),
        CtlOutcome::Ok
    );
    assert_eq!(
        mmu.take_tlb_flush(),
        TlbFlush::All,
        "switch to another root"
    );
    assert_eq!(
        retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, ra)),
        CtlOutcome::Ok
    );
    assert_eq!(
        mmu.take_tlb_flush(),
        TlbFlush::All,
        "switch back to a cached root"
    );
    assert_eq!(
        retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, ra)),
        CtlOutcome::Ok
    );
    assert_eq!(
        mmu.take_tlb_flush(),
        TlbFlush::None,
        "same root, nothing out of sync"
    );
    // The guest changes 0x1000's entry through the window. With unsync (the default) the
    // table goes out of sync and the store is the guest's own; INVLPG resyncs the entry.
    assert_eq!(fault(&mut mmu, &mut host, 0x40_0000, 0), PfOutcome::Fixed);
    let out = fault(&mut mmu, &mut host, 0x40_0008, PFERR_W | PFERR_P);
    assert_eq!(out, PfOutcome::Fixed);
    assert_eq!(
        mmu.take_tlb_flush(),
        TlbFlush::None,
        "unsync: nothing dropped yet"
    );
    mem.write((pt << 12) + 8, 8, (f2 << 12) | PWU);
    mmu.invlpg(&mem, 0x1000);
    assert_eq!(
        mmu.take_tlb_flush(),
        TlbFlush::OneLeaf,
        "INVLPG resyncs one entry"
    );
    mmu.invlpg(&mem, 0x1000);
    assert_eq!(
        mmu.take_tlb_flush(),
        TlbFlush::None,
        "nothing left to resync"
    );
    finish(&mut mmu, &mut host);

    // Without unsync the store is emulated and drops the entry it overwrites; a second
    // entry dropped makes it all.
    let cfg = Config {
        unsync: false,
        ..Config::DEFAULT
    };
    b.map(&mem, ra, 0x1000, f1);
    let mut mmu = start(3, cfg, &mem, &mut host, ra);
    assert_eq!(fault(&mut mmu, &mut host, 0x1000, 0), PfOutcome::Fixed);
    assert_eq!(fault(&mut mmu, &mut host, 0x2000, 0), PfOutcome::Fixed);
    assert_eq!(fault(&mut mmu, &mut host, 0x40_0000, 0), PfOutcome::Fixed);
    let _ = mmu.take_tlb_flush();
    let out = fault(&mut mmu, &mut host, 0x40_0008, PFERR_W | PFERR_P);
    assert!(matches!(out, PfOutcome::EmulateWrite { .. }), "{out:?}");
    // mov [rdi], rax: 0x1000 -> f2.
    let insn = emulate::decode(&[0x48, 0x89, 0x07], CodeSize::Bits64).unwrap();
    let mut r = emu_regs(0x5000);
    r.gpr[gpr::RDI] = 0x40_0008;
    r.gpr[gpr::RAX] = (f2 << 12) | PWU;
    let mut m = access::EngineAccess::new(&mut mmu, &mut host, &mem, 0, false);
    let o = emulate::execute(&insn, &mut r, &Env::default(), &mut m, None);
    assert_eq!(o, Ok(Outcome::Done));
    assert_eq!(
        mmu.take_tlb_flush(),
        TlbFlush::OneLeaf,
        "a store drops one entry"
    );
    // mov [rdi], rax with rdi at 0x2000's entry, after 0x1000's was faulted in again.
    assert_eq!(fault(&mut mmu, &mut host, 0x1000, 0), PfOutcome::Fixed);
    r.gpr[gpr::RDI] = 0x40_0010;
    r.rip = 0x5000;
    let mut m = access::EngineAccess::new(&mut mmu, &mut host, &mem, 0, false);
    let o = emulate::execute(&insn, &mut r, &Env::default(), &mut m, None);
    assert_eq!(o, Ok(Outcome::Done));
    r.gpr[gpr::RDI] = 0x40_0008;
    r.rip = 0x5000;
    let mut m = access::EngineAccess::new(&mut mmu, &mut host, &mem, 0, false);
    let o = emulate::execute(&insn, &mut r, &Env::default(), &mut m, None);
    assert_eq!(o, Ok(Outcome::Done));
    assert_eq!(mmu.take_tlb_flush(), TlbFlush::All, "two entries dropped");
    finish(&mut mmu, &mut host);
}

/// The CPU's TLB kept across exits (a VPID), invalidated as the vCPU does it
/// ([`common::Tlb`]): a translation cached through one alias of a shared page table must
/// go at the guest's INVLPG of that alias even when the engine has nothing left to change
/// there (an INVLPG of the other alias resynced the entry before); a switch to another
/// root with the PCID no-flush bit must not keep the old root's translations (the engine
/// reports the switch); a frame that becomes a page table must lose its writable
/// translations (the engine reports the write protection).
#[test]
fn tlb_kept_across_exits_is_invalidated_where_needed() {
    let mem = GMem::new(64, &[]);
    let mut b = Builder::new(3);
    let ra = b.root();
    let rb = b.root();
    let (f1, f2, f3) = (b.alloc(), b.alloc(), b.alloc());
    b.map(&mem, ra, 0x1000, f1);
    b.map(&mem, rb, 0x1000, f3);
    let (l3, pt) = (b.table(&mem, ra, 0x1000, 2), b.table(&mem, ra, 0x1000, 1));
    // The same level-1 table also under directory entry 1: 0x20_1000 aliases 0x1000.
    w8(&mem, l3, 1, (pt << 12) | PWU);
    // A window onto the table, elsewhere.
    b.map(&mem, ra, 0x4000_0000, pt);
    let mut host = Host::new();
    let mut mmu = start(3, Config::DEFAULT, &mem, &mut host, ra);
    let mut tlb = Tlb::new();
    let read = |mmu: &mut Mmu, host: &mut Host, tlb: &mut Tlb, gva: u64| match cpu_access_via(
        mmu, host, &mem, tlb, gva, RD, None,
    ) {
        CpuResult::Ok(hpa) => hpa,
        r => panic!("read of {gva:#x}: {r:?}"),
    };
    assert_eq!(read(&mut mmu, &mut host, &mut tlb, 0x1000), hpa(f1));
    assert_eq!(read(&mut mmu, &mut host, &mut tlb, 0x20_1000), hpa(f1));
    // The guest points the entry at f2 through the window (the table goes out of sync:
    // a plain store), then INVLPGs both aliases in turn.
    let st = cpu_access_via(
        &mut mmu,
        &mut host,
        &mem,
        &mut tlb,
        0x4000_0008,
        WR,
        Some(((f2 << 12) | PWU, 8)),
    );
    assert!(
        matches!(st, CpuResult::Ok(_) | CpuResult::Emulated(_)),
        "{st:?}"
    );
    tlb.engine(&mut mmu);
    mmu.invlpg(&mem, 0x1000);
    tlb.invlpg(&mut mmu, 0x1000);
    assert_eq!(read(&mut mmu, &mut host, &mut tlb, 0x1000), hpa(f2));
    tlb.engine(&mut mmu);
    mmu.invlpg(&mem, 0x20_1000);
    tlb.invlpg(&mut mmu, 0x20_1000);
    assert_eq!(
        read(&mut mmu, &mut host, &mut tlb, 0x20_1000),
        hpa(f2),
        "second alias after its INVLPG"
    );
    mmu.teardown(&mut host);

    // PCIDs 1 and 2; a no-flush switch from one root to the other.
    let (cr0, cr4, efer) = mode_regs(3);
    let mut mmu = start(3, Config::DEFAULT, &mem, &mut host, ra);
    let pcide = retry_oom(&mut host, |h| {
        mmu.set_mode(h, &mem, cr0, cr4 | CR4_PCIDE, efer)
    });
    assert_eq!(pcide, CtlOutcome::Ok);
    assert_eq!(
        retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, ra | 1)),
        CtlOutcome::Ok
    );
    let mut tlb = Tlb::new();
    assert_eq!(read(&mut mmu, &mut host, &mut tlb, 0x1000), hpa(f2));
    let noflush = 1u64 << 63;
    let r = retry_oom(&mut host, |h| mmu.set_cr3(h, &mem, rb | 2 | noflush));
    assert_eq!(r, CtlOutcome::Ok);
    assert_eq!(
        read(&mut mmu, &mut host, &mut tlb, 0x1000),
        hpa(f3),
        "another PCID's root after a no-flush switch"
    );
    mmu.teardown(&mut host);

    // A data page written through the TLB becomes a page table: the next store to it
    // must exit (write protection), not go through a cached writable translation.
    let mut mmu = start(3, Config::DEFAULT, &mem, &mut host, ra);
    let mut tlb = Tlb::new();
    b.map(&mem, ra, 0x5000, f3);
    let st = cpu_access_via(
        &mut mmu,
        &mut host,
        &mem,
        &mut tlb,
        0x5000,
        WR,
        Some((7, 8)),
    );
    assert!(matches!(st, CpuResult::Ok(_)), "{st:?}");
    // f3 becomes the level-1 table of 0x60_0000 (entry 3 of the directory, which is
    // shadowed: the guest's store exits and is emulated).
    w8(&mem, l3, 3, (f3 << 12) | PWU);
    mmu.guest_wrote(&mut host, &mem, (l3 << 12) + 3 * 8, 8);
    w8(&mem, f3, 0, (f1 << 12) | PWU);
    assert_eq!(read(&mut mmu, &mut host, &mut tlb, 0x60_0000), hpa(f1));
    let st = cpu_access_via(
        &mut mmu,
        &mut host,
        &mem,
        &mut tlb,
        0x5000,
        WR,
        Some(((f2 << 12) | PWU, 8)),
    );
    assert!(
        matches!(st, CpuResult::Emulated(_) | CpuResult::Ok(_)),
        "{st:?}"
    );
    tlb.engine(&mut mmu);
    mmu.invlpg(&mem, 0x60_0000);
    tlb.invlpg(&mut mmu, 0x60_0000);
    assert_eq!(
        read(&mut mmu, &mut host, &mut tlb, 0x60_0000),
        hpa(f2),
        "the table's new entry after INVLPG"
    );
    finish(&mut mmu, &mut host);
}

// ------------------------------------------------------------------ issue 13: bypass

const PFERR_P_RSVD: u32 = PFERR_P | PFERR_RSVD;
/// The engine's defaults with the guest-not-present bypass on (it is off by default).
const GNP: Config = Config {
    gnp_bypass: true,
    ..Config::DEFAULT
};

/// A 4-level guest with 0x1000 mapped to `f1`, 0x2000 and 0x3000 not mapped in the same
/// table, and a writable window onto that table at 0x4000_0000. Returns (mem, builder,
/// cr3, table, f1).
fn gnp_world() -> (GMem, Builder, u64, u64, u64) {
    let mem = GMem::new(64, &[]);
    let mut b = Builder { mode: 3, next: 1 };
    let cr3 = b.root();
    let f1 = b.alloc();
    b.map(&mem, cr3, 0x1000, f1);
    let l4 = mem.read(cr3, 8) >> 12 & 0xf_ffff;
    let l3 = mem.read(l4 << 12, 8) >> 12 & 0xf_ffff;
    let pt = mem.read(l3 << 12, 8) >> 12 & 0xf_ffff;
    b.map(&mem, cr3, 0x4000_0000, pt);
    (mem, b, cr3, pt, f1)
}

/// Where the bypass is not in force (32-bit paging without SMEP), the prefetch around a
/// fault leaves the guest's not-present neighbours not filled: a 0 would mark them
/// guest-not-present for a bypass that is off. Fails with the prefetch's 0 taken
/// whenever the not-filled value is non-zero.
#[test]
fn prefetch_marks_no_guest_not_present_entry_where_the_bypass_is_not_in_force() {
    let mem = GMem::new(64, &[]);
    let mut b = Builder { mode: 1, next: 1 };
    let cr3 = b.root();
    let f1 = b.alloc();
    b.map(&mem, cr3, 0x1000, f1);
    let mut host = Host::new();
    let mut mmu = start(1, Config { prefetch: 8, ..GNP }, &mem, &mut host, cr3);
    assert!(!mmu.hw_state().pfec_bypass, "32-bit paging, no SMEP");
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x1000, RD, None),
        CpuResult::Ok(hpa(f1))
    );
    assert_eq!(mmu.stats().get(Counter::GnpEntriesSet), 0);
    let ec = hw_walk(&mmu, &host, 0x2000, RD).unwrap_err();
    assert_eq!(ec, PFERR_P_RSVD, "not filled: the fault exits");
    mmu.teardown(&mut host);
    assert_eq!(host.live(), 0);
}

/// Where the bypass is not in force (32-bit paging without SMEP), a resync that drops a
/// shadow entry because the guest unmapped the page leaves it not filled, as every other
/// path does: a 0 would send the page's faults to the guest without the engine, which
/// then also counts a guest-not-present entry the hardware never uses that way. Fails with
/// the resync loop's 0 taken whenever the not-filled value is non-zero.
#[test]
fn resync_marks_no_guest_not_present_entry_where_the_bypass_is_not_in_force() {
    let mem = GMem::new(64, &[]);
    let mut b = Builder { mode: 1, next: 1 };
    let cr3 = b.root();
    let (f1, f2) = (b.alloc(), b.alloc());
    b.map(&mem, cr3, 0x1000, f1);
    b.map(&mem, cr3, 0x2000, f2);
    let pt = mem.read(cr3, 4) >> 12 & 0xf_ffff;
    b.map(&mem, cr3, 0x4000_0000, pt);
    let mut host = Host::new();
    let mut mmu = start(1, Config { prefetch: 0, ..GNP }, &mem, &mut host, cr3);
    assert!(!mmu.hw_state().pfec_bypass, "32-bit paging, no SMEP");
    for (gva, f) in [(0x1000, f1), (0x2000, f2)] {
        let r = cpu_access(&mut mmu, &mut host, &mem, gva, RD, None);
        assert_eq!(r, CpuResult::Ok(hpa(f)));
    }
    // The guest unmaps 0x2000 with a store over its present entry: out of sync.
    let st = cpu_access(&mut mmu, &mut host, &mem, 0x4000_0008, WR, Some((0, 4)));
    assert!(matches!(st, CpuResult::Ok(_)), "{st:?}");
    assert_eq!(mmu.unsync_frames(), 1, "the table is out of sync");
    mmu.flush(&mem);
    assert_eq!(mmu.unsync_frames(), 0);
    assert_eq!(mmu.stats().get(Counter::GnpEntriesSet), 0);
    let ec = hw_walk(&mmu, &host, 0x2000, RD).unwrap_err();
    assert_eq!(ec, PFERR_P_RSVD, "not filled: the fault exits");
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x2000, RD, None),
        CpuResult::Fault(0)
    );
    mmu.teardown(&mut host);
    assert_eq!(host.live(), 0);
}

/// A not-present entry of an out-of-sync table made present by a plain guest store (no
/// exit, no INVLPG: legal, the CPU caches no not-present entry) must not give the guest
/// a #PF: the engine turns the table's guest-not-present entries (0, faults skip the
/// exit) into not-filled ones when it goes out of sync. Back in sync (a flush), 0 is
/// used again. Fails with `forget_guest_not_present` not called in `mark_unsync`.
#[test]
fn unsync_not_present_to_present_gives_no_spurious_fault() {
    let (mem, mut b, cr3, _pt, f1) = gnp_world();
    let f2 = b.alloc();
    let mut host = Host::new();
    let cfg = Config { prefetch: 0, ..GNP };
    let mut mmu = start(3, cfg, &mem, &mut host, cr3);
    assert!(mmu.hw_state().pfec_bypass);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x1000, RD, None),
        CpuResult::Ok(hpa(f1))
    );
    // 0x2000's and 0x3000's guest entries are not present: the first fault on each
    // exits (the shadow entry was not filled) and makes it 0, the next skips the exit,
    // with the guest's error code.
    for gva in [0x2000, 0x3000] {
        let exited = mmu.stats().get(Counter::GnpFaultsExited);
        let r = cpu_access(&mut mmu, &mut host, &mem, gva, RD, None);
        assert_eq!(r, CpuResult::Fault(0));
        assert_eq!(mmu.stats().get(Counter::GnpFaultsExited), exited + 1);
    }
    let ec = hw_walk(&mmu, &host, 0x2000, RD).unwrap_err();
    assert_eq!(ec, 0);
    assert!(pf_skips_exit(&mmu, ec));
    // The guest rewrites 0x1000's (present) entry through the window: the table goes
    // out of sync (a write over a not-present entry would be emulated instead).
    let st = cpu_access(
        &mut mmu,
        &mut host,
        &mem,
        0x4000_0008,
        WR,
        Some(((f1 << 12) | PWU, 8)),
    );
    assert!(matches!(st, CpuResult::Ok(_)), "{st:?}");
    assert_eq!(mmu.unsync_frames(), 1, "the table is out of sync");
    // The guest points 0x2000 at f2 through the window: a plain store, no exit.
    let st = cpu_access(
        &mut mmu,
        &mut host,
        &mem,
        0x4000_0010,
        WR,
        Some(((f2 << 12) | PWU, 8)),
    );
    assert!(matches!(st, CpuResult::Ok(_)), "{st:?}");
    assert_eq!(mmu.unsync_frames(), 1, "the table is out of sync");
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x2000, RD, None),
        CpuResult::Ok(hpa(f2)),
        "0x2000 right after the guest mapped it"
    );
    // 0x3000 is still not present: in the out-of-sync table its entry exits.
    let ec = hw_walk(&mmu, &host, 0x3000, RD).unwrap_err();
    assert_eq!(ec, PFERR_P_RSVD, "not-filled entry in an out-of-sync table");
    // Back in sync: the next fault exits once and makes it 0 again.
    mmu.flush(&mem);
    assert_eq!(mmu.unsync_frames(), 0);
    let r = cpu_access(&mut mmu, &mut host, &mem, 0x3000, RD, None);
    assert_eq!(r, CpuResult::Fault(0));
    assert_eq!(hw_walk(&mmu, &host, 0x3000, RD), Err(0));
    let direct = direct_faults();
    let r = cpu_access(&mut mmu, &mut host, &mem, 0x3000, RD, None);
    assert_eq!(r, CpuResult::Fault(0));
    assert_eq!(direct_faults(), direct + 1);
    mmu.teardown(&mut host);
    assert_eq!(host.live(), 0);
}

/// Entries the engine drops or zaps say nothing about the guest entry: they must be the
/// not-filled value (a fault exits), never 0 (a fault would go to the guest although the
/// guest entry may be present). Fails with `drop_spte` writing 0.
#[test]
fn zapped_entries_are_not_filled_not_zero() {
    let (mem, _b, cr3, pt, f1) = gnp_world();
    let mut host = Host::new();
    let cfg = Config {
        flood_threshold: 1,
        prefetch: 0,
        ..GNP
    };
    let mut mmu = start(3, cfg, &mem, &mut host, cr3);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x1000, RD, None),
        CpuResult::Ok(hpa(f1))
    );
    // One emulated store floods the table (threshold 1): its shadow page is zapped and
    // the directory entry pointing to it dropped.
    mmu.guest_wrote(&mut host, &mem, (pt << 12) + 5 * 8, 8);
    assert!(!mmu.is_shadowed(pt));
    let ec = hw_walk(&mmu, &host, 0x1000, RD).unwrap_err();
    assert_eq!(ec, PFERR_P_RSVD, "a dropped entry exits (P=1, RSVD=1)");
    assert!(!pf_skips_exit(&mmu, ec));
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x1000, RD, None),
        CpuResult::Ok(hpa(f1))
    );
    mmu.teardown(&mut host);
    assert_eq!(host.live(), 0);
}

/// A guest entry with a reserved bit set gives the guest what hardware gives: a #PF
/// with P=1 and RSVD=1 (the shadow entry is not filled: the fault exits and the engine
/// injects it), also after prefetch has looked at the entry and found it unusable; a
/// not-present guest entry with the same bits is plain not-present (P=0, no exit once
/// the engine has seen it). Fails if `note_gpte` writes 0 for a present entry with
/// reserved bits (prefetch would make the first fault P=0).
#[test]
fn guest_reserved_bits_fault_as_on_hardware() {
    let (mem, _b, cr3, pt, f1) = gnp_world();
    // Above the guest's MAXPHYADDR 46.
    let rsvd = 1u64 << 50;
    // Prefetch group 8..15: 8 mapped, 9 present with a reserved bit, 10 not present with
    // the same bit.
    w8(&mem, pt, 8, (f1 << 12) | PWU);
    w8(&mem, pt, 9, rsvd | (f1 << 12) | PWU);
    w8(&mem, pt, 10, rsvd | (f1 << 12) | PTE_W | PTE_U);
    let mut host = Host::new();
    let mut mmu = start(3, GNP, &mem, &mut host, cr3);
    let r = cpu_access(&mut mmu, &mut host, &mem, 0x8000, RD, None);
    assert_eq!(r, CpuResult::Ok(hpa(f1)));
    let injected = mmu.stats().get(Counter::GuestFaultsInjected);
    for n in 1..=2 {
        let r = cpu_access(&mut mmu, &mut host, &mem, 0x9000, WR, None);
        assert_eq!(r, CpuResult::Fault(PFERR_P_RSVD | PFERR_W));
        let now = mmu.stats().get(Counter::GuestFaultsInjected);
        assert_eq!(now, injected + n, "reserved-bit fault {n} exited");
    }
    // The not-present one exits at most once (the entry was not filled), then never.
    for _ in 0..2 {
        let r = cpu_access(&mut mmu, &mut host, &mem, 0xa000, WR, None);
        assert_eq!(r, CpuResult::Fault(PFERR_W));
    }
    let direct = direct_faults();
    let r = cpu_access(&mut mmu, &mut host, &mem, 0xa000, WR, None);
    assert_eq!(r, CpuResult::Fault(PFERR_W));
    assert_eq!(
        direct_faults(),
        direct + 1,
        "no exit for a not-present entry"
    );
    mmu.teardown(&mut host);
    assert_eq!(host.live(), 0);
}

/// With the host MAXPHYADDR at 52 there is no reserved address bit to mark not-filled
/// entries with: the bypass is off, every not-filled entry is 0 and every #PF exits.
/// Fails if `Mmu::new` keeps the bypass on at 52.
#[test]
fn maxphyaddr_52_disables_bypass() {
    let (mem, _b, cr3, _pt, f1) = gnp_world();
    let mut host = Host::new();
    let cfg = Config {
        host_maxphyaddr: 52,
        ..GNP
    };
    let mut mmu = start(3, cfg, &mem, &mut host, cr3);
    assert!(!mmu.config().gnp_bypass);
    assert!(!mmu.hw_state().pfec_bypass);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x1000, RD, None),
        CpuResult::Ok(hpa(f1))
    );
    for gva in [0x2000u64, 0x20_0000, 0x4000_0000_0000] {
        let ec = hw_walk(&mmu, &host, gva, RD).unwrap_err();
        assert_eq!(ec & PFERR_RSVD, 0, "{gva:#x}: no entry with reserved bits");
        assert!(!pf_skips_exit(&mmu, ec));
    }
    let exited = mmu.stats().get(Counter::GnpFaultsExited);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x2000, RD, None),
        CpuResult::Fault(0)
    );
    assert_eq!(mmu.stats().get(Counter::GnpFaultsExited), exited + 1);
    mmu.teardown(&mut host);
    assert_eq!(host.live(), 0);
}

/// The CPU runs every guest with EFER.NXE=1 and PAE paging, so its error code for a
/// fetch carries I/D; a 32-bit guest without SMEP (or a PAE guest with EFER.NXE=0) must
/// get I/D=0 (SDM vol. 3A 4.7): there, not-present faults must exit so the engine gives
/// the guest's error code. Fails if `pfec_bypass` ignores the I/D rule.
#[test]
fn fetch_error_code_without_nx_goes_through_the_engine() {
    let mem = GMem::new(64, &[]);
    let mut b = Builder { mode: 1, next: 1 };
    let cr3 = b.root();
    let f1 = b.alloc();
    b.map(&mem, cr3, 0x1000, f1);
    let mut host = Host::new();
    let mut mmu = start(1, GNP, &mem, &mut host, cr3);
    assert!(!mmu.hw_state().pfec_bypass, "32-bit paging, no SMEP");
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x1000, RD, None),
        CpuResult::Ok(hpa(f1))
    );
    for _ in 0..2 {
        let r = cpu_access(&mut mmu, &mut host, &mem, 0x2000, FETCH, None);
        assert_eq!(r, CpuResult::Fault(0), "the guest's code");
    }
    // With the bypass not in force the engine does not mark guest-not-present entries
    // (it would save nothing): the entry stays not filled and every fault exits.
    let ec = hw_walk(&mmu, &host, 0x2000, FETCH).unwrap_err();
    assert_eq!(ec, PFERR_P_RSVD | PFERR_ID, "the CPU's code, not filled");
    assert!(!pf_skips_exit(&mmu, ec));
    // With SMEP the guest's code has I/D too: the bypass applies.
    let (cr0, cr4, efer) = mode_regs(1);
    let r = retry_oom(&mut host, |h| {
        mmu.set_mode(h, &mem, cr0, cr4 | CR4_SMEP, efer)
    });
    assert_eq!(r, CtlOutcome::Ok);
    assert!(mmu.hw_state().pfec_bypass);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x1000, RD, None),
        CpuResult::Ok(hpa(f1))
    );
    let r = cpu_access(&mut mmu, &mut host, &mem, 0x2000, FETCH, None);
    assert_eq!(r, CpuResult::Fault(PFERR_ID));
    let direct = direct_faults();
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x2000, FETCH, None),
        CpuResult::Fault(PFERR_ID)
    );
    assert_eq!(direct_faults(), direct + 1);
    mmu.teardown(&mut host);
    assert_eq!(host.live(), 0);
}

/// The saving shows in the counters: repeated not-present faults on the same pages exit
/// once at most with the bypass (the first fault, if the shadow did not know yet) and
/// every time without it. `guest_faults_injected` counts the exits.
#[test]
fn bypass_saves_guest_fault_exits() {
    let run = |gnp_bypass: bool| {
        let (mem, _b, cr3, _pt, f1) = gnp_world();
        let mut host = Host::new();
        let cfg = Config { gnp_bypass, ..GNP };
        let mut mmu = start(3, cfg, &mem, &mut host, cr3);
        assert_eq!(
            cpu_access(&mut mmu, &mut host, &mem, 0x1000, RD, None),
            CpuResult::Ok(hpa(f1))
        );
        for _ in 0..10 {
            for gva in [0x2000u64, 0x3000, 0x40_0000, 0x80_0000_0000] {
                assert_eq!(
                    cpu_access(&mut mmu, &mut host, &mem, gva, WR, None),
                    CpuResult::Fault(PFERR_W)
                );
            }
        }
        let s = *mmu.stats();
        mmu.teardown(&mut host);
        (
            s.get(Counter::GuestFaultsInjected),
            s.get(Counter::GnpFaultsExited),
            s.get(Counter::GnpEntriesSet),
        )
    };
    let (off_injected, off_exited, off_set) = run(false);
    assert_eq!((off_injected, off_exited, off_set), (40, 40, 0));
    let (on_injected, on_exited, on_set) = run(true);
    assert!(on_injected <= 4, "{on_injected} exits with the bypass");
    assert_eq!(on_exited, on_injected);
    assert!(on_set > 0);
}

/// An emulated store of a not-present value into an in-sync page table (the guest
/// unmapping a page) makes the shadow entry guest-not-present at once: the guest's next
/// access to the page faults without an exit. Fails without `note_guest_entry` in
/// `drop_written`.
#[test]
fn emulated_unmap_needs_no_exit_for_the_next_fault() {
    let (mem, _b, cr3, _pt, f1) = gnp_world();
    let mut host = Host::new();
    let cfg = Config {
        unsync: false,
        ..GNP
    };
    let mut mmu = start(3, cfg, &mem, &mut host, cr3);
    let r = cpu_access(&mut mmu, &mut host, &mem, 0x1000, RD, None);
    assert_eq!(r, CpuResult::Ok(hpa(f1)));
    // Clear 0x1000's PTE through the window: the table is write-protected and stays in
    // sync (unsync off), so the store is emulated.
    let st = cpu_access(&mut mmu, &mut host, &mem, 0x4000_0008, WR, Some((0, 8)));
    assert!(matches!(st, CpuResult::Emulated(_)), "{st:?}");
    let (exited, direct) = (mmu.stats().get(Counter::GnpFaultsExited), direct_faults());
    let r = cpu_access(&mut mmu, &mut host, &mem, 0x1000, RD, None);
    assert_eq!(r, CpuResult::Fault(0));
    assert_eq!(mmu.stats().get(Counter::GnpFaultsExited), exited, "no exit");
    assert_eq!(direct_faults(), direct + 1);
    mmu.teardown(&mut host);
    assert_eq!(host.live(), 0);
}

/// With the bypass on, a guest store over a not-present entry of an in-sync leaf table
/// (the guest mapping the page it just faulted on) is emulated and fills the new shadow
/// entry: the table stays in sync, the access that follows needs no exit, and the
/// table's other not-present entries stay 0 (their faults skip the exit). Fails without
/// `emulates_new_entry` in the fault path (the table goes out of sync), without the
/// fill in `drop_written` (0x2000 exits once more) and without `SP_NEW_UNFILLABLE` (the
/// table of a guest that writes new entries without A keeps being emulated).
#[test]
fn new_entry_store_is_emulated_and_filled() {
    let (mem, mut b, cr3, _pt, f1) = gnp_world();
    let f2 = b.alloc();
    let mut host = Host::new();
    let cfg = Config { prefetch: 0, ..GNP };
    let mut mmu = start(3, cfg, &mem, &mut host, cr3);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x1000, RD, None),
        CpuResult::Ok(hpa(f1))
    );
    for gva in [0x2000, 0x3000] {
        let r = cpu_access(&mut mmu, &mut host, &mem, gva, RD, None);
        assert_eq!(r, CpuResult::Fault(0));
    }
    let st = cpu_access(
        &mut mmu,
        &mut host,
        &mem,
        0x4000_0010,
        WR,
        Some(((f2 << 12) | PWU | PTE_A, 8)),
    );
    assert!(matches!(st, CpuResult::Emulated(_)), "{st:?}");
    assert_eq!(mmu.unsync_frames(), 0, "the table stays in sync");
    assert_eq!(
        hw_walk(&mmu, &host, 0x2000, RD),
        Ok(hpa(f2)),
        "filled from the new entry"
    );
    let ec = hw_walk(&mmu, &host, 0x3000, RD).unwrap_err();
    assert_eq!(ec, 0, "still guest-not-present");
    assert!(pf_skips_exit(&mmu, ec));
    // A new entry without A: emulated too, but the CPU must set A, so no fill; the
    // access exits once and is fixed (never a fault the guest would see).
    let st = cpu_access(
        &mut mmu,
        &mut host,
        &mem,
        0x4000_0018,
        WR,
        Some(((f2 << 12) | PWU, 8)),
    );
    assert!(matches!(st, CpuResult::Emulated(_)), "{st:?}");
    assert_eq!(hw_walk(&mmu, &host, 0x3000, RD).unwrap_err(), PFERR_P_RSVD);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x3000, RD, None),
        CpuResult::Ok(hpa(f2))
    );
    assert_eq!(mmu.unsync_frames(), 0);
    // That table's new entries come without A: emulating them saves no exit, so its
    // next store over a not-present entry lets it go out of sync, as without the bypass.
    let st = cpu_access(
        &mut mmu,
        &mut host,
        &mem,
        0x4000_0020,
        WR,
        Some(((f2 << 12) | PWU | PTE_A, 8)),
    );
    assert!(matches!(st, CpuResult::Ok(_)), "{st:?}");
    assert_eq!(mmu.unsync_frames(), 1);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x4000, RD, None),
        CpuResult::Ok(hpa(f2))
    );
    mmu.teardown(&mut host);
    assert_eq!(host.live(), 0);
}

/// A leaf table the guest keeps mapping new pages into (first_touch's pattern, each
/// store emulated and filled, no fault through the table in between) is not taken for
/// a frame reused as data: its flood count restarts at every filled store. Emulated
/// stores that map nothing still count. Fails without the `write_count` reset in
/// `guest_wrote` (the table is unshadowed after `flood_threshold` stores).
#[test]
fn new_entry_stores_do_not_flood_the_table() {
    let (mem, mut b, cr3, pt, f1) = gnp_world();
    let mut host = Host::new();
    let cfg = Config {
        prefetch: 0,
        flood_threshold: 3,
        ..GNP
    };
    let mut mmu = start(3, cfg, &mem, &mut host, cr3);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x1000, RD, None),
        CpuResult::Ok(hpa(f1))
    );
    for i in 2..10u64 {
        let f = b.alloc();
        let st = cpu_access(
            &mut mmu,
            &mut host,
            &mem,
            0x4000_0000 + i * 8,
            WR,
            Some(((f << 12) | PWU | PTE_A | PTE_D, 8)),
        );
        assert!(matches!(st, CpuResult::Emulated(_)), "store {i}: {st:?}");
        assert!(mmu.is_shadowed(pt), "store {i} flooded the table out");
        assert_eq!(hw_walk(&mmu, &host, i << 12, WR), Ok(hpa(f)));
    }
    assert_eq!(mmu.unsync_frames(), 0);
    // Stores of not-present values map nothing: the third one floods the table out.
    for i in 20..23u64 {
        let st = cpu_access(
            &mut mmu,
            &mut host,
            &mem,
            0x4000_0000 + i * 8,
            WR,
            Some((0, 8)),
        );
        assert!(matches!(st, CpuResult::Emulated(_)), "store {i}: {st:?}");
    }
    assert!(!mmu.is_shadowed(pt), "flooded by stores that map nothing");
    mmu.teardown(&mut host);
    assert_eq!(host.live(), 0);
}

/// Without the bypass nothing changes: a store over a not-present entry lets the table
/// go out of sync, as before (emulating it would save no exit: every fault exits).
#[test]
fn without_bypass_new_entry_store_unsyncs() {
    let (mem, mut b, cr3, _pt, f1) = gnp_world();
    let f2 = b.alloc();
    let mut host = Host::new();
    let cfg = Config {
        gnp_bypass: false,
        ..GNP
    };
    let mut mmu = start(3, cfg, &mem, &mut host, cr3);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x1000, RD, None),
        CpuResult::Ok(hpa(f1))
    );
    let st = cpu_access(
        &mut mmu,
        &mut host,
        &mem,
        0x4000_0010,
        WR,
        Some(((f2 << 12) | PWU | PTE_A, 8)),
    );
    assert!(matches!(st, CpuResult::Ok(_)), "{st:?}");
    assert_eq!(mmu.unsync_frames(), 1);
    assert_eq!(
        cpu_access(&mut mmu, &mut host, &mem, 0x2000, RD, None),
        CpuResult::Ok(hpa(f2))
    );
    mmu.teardown(&mut host);
    assert_eq!(host.live(), 0);
}

/// Not-filled entries fault with P=1 and RSVD=1 (so they exit) at every host MAXPHYADDR
/// the bypass runs with: up to 48 they are the one-byte pattern (bit 48 reserved), above
/// they carry bits 51..=MAXPHYADDR. Fails if the pattern is used at 49 (bit 48 is an
/// address bit there: the walk would go on to a frame that does not exist).
#[test]
fn not_filled_entries_fault_at_every_host_maxphyaddr() {
    for host_maxphyaddr in [40u8, 46, 48, 49, 50, 51] {
        let (mem, _b, cr3, _pt, f1) = gnp_world();
        let mut host = Host::new();
        let cfg = Config {
            prefetch: 0,
            host_maxphyaddr,
            ..GNP
        };
        let mut mmu = start(3, cfg, &mem, &mut host, cr3);
        assert!(mmu.hw_state().pfec_bypass);
        assert_eq!(
            cpu_access(&mut mmu, &mut host, &mem, 0x1000, RD, None),
            CpuResult::Ok(hpa(f1))
        );
        // A leaf, a directory and a PML4 entry of fresh shadow pages.
        for gva in [0x2000u64, 0x20_0000, 0x80_0000_0000] {
            let r = hw_walk(&mmu, &host, gva, RD);
            assert_eq!(r, Err(PFERR_P_RSVD), "{gva:#x} at {host_maxphyaddr}");
        }
        mmu.teardown(&mut host);
        assert_eq!(host.live(), 0);
    }
}
