// SPDX-License-Identifier: GPL-2.0

//! Virtual-processor identifiers: one per vCPU, from a module-wide bitmap.
//!
//! With a VPID in the VMCS the CPU tags the guest's TLB entries with it and keeps them
//! across VM exits and entries, instead of flushing the TLB at every entry. VPID 0 is the
//! host's and never handed out. When every VPID is taken the vCPU runs without one (the
//! TLB is flushed at each entry, as without the feature).

use core::sync::atomic::{AtomicU64, Ordering};

/// Words of the bitmap: 64 VPIDs each, 4095 usable in all (16 times the default VM limit,
/// `max_vms`; vCPUs beyond them run without one).
const WORDS: usize = 64;

/// Bit n of word w set: VPID 64 * w + n is taken. Bit 0 of word 0 (VPID 0) is never set.
static TAKEN: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];

/// A VPID owned by one vCPU, given back when dropped.
///
/// # Invariants
///
/// The value is nonzero, below `64 * WORDS`, and its bit in `TAKEN` is set and belongs to
/// this value alone.
pub(crate) struct Vpid(u16);

impl Vpid {
    /// A free VPID, or `None` when all are taken.
    pub(crate) fn alloc() -> Option<Vpid> {
        // (Not `enumerate`: its counter carries an overflow check in the kernel build.)
        for (w, word) in (0..WORDS).zip(TAKEN.iter()) {
            // VPID 0 is the host's: bit 0 of word 0 reads as taken.
            let reserved = if w == 0 { 1 } else { 0 };
            let mut cur = word.load(Ordering::Relaxed);
            loop {
                let free = !(cur | reserved);
                if free == 0 {
                    break;
                }
                let bit = free.trailing_zeros();
                let mask = 1u64 << bit;
                match word.compare_exchange_weak(
                    cur,
                    cur | mask,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    // w < 64 and bit < 64: the VPID is below 4096, nonzero (bit 0 of word 0
                    // is never free). INVARIANT: the bit was clear and this CAS set it.
                    Ok(_) => return Some(Vpid((w as u16) << 6 | bit as u16)),
                    Err(now) => cur = now,
                }
            }
        }
        None
    }

    /// The number for the VMCS and INVVPID.
    pub(crate) fn get(&self) -> u16 {
        self.0
    }
}

impl Drop for Vpid {
    fn drop(&mut self) {
        let (w, bit) = (usize::from(self.0 >> 6), self.0 & 63);
        if let Some(word) = TAKEN.get(w) {
            // The bit is ours (type invariant): clearing it frees the VPID.
            word.fetch_and(!(1u64 << bit), Ordering::Release);
        }
    }
}
