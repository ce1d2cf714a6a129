// SPDX-License-Identifier: GPL-2.0

//! Guest RAM: the pages of one VM's guest-physical memory and the accessors the vCPU, the
//! MMU engine and mmap use.
//!
//! Owned by the VM ([`crate::vm`]), lent to the vCPU for each RUN; it depends on neither.

use crate::mmu::{GuestFrame, GuestMemory};
use crate::uapi;
use kernel::{page::Page, prelude::*};

/// Guest-physical memory: `size` bytes from address 0, page by page.
///
/// # Invariants
///
/// `frames[i]` is the kernel address and physical address of `pages[i]`; the pages live
/// (and stay mapped in the kernel) as long as `self`.
pub(crate) struct GuestRam {
    pages: KVVec<Page>,
    frames: KVVec<GuestFrame>,
}

// SAFETY: The raw pointers in `frames` point into `pages`, which are owned and `Send`.
unsafe impl Send for GuestRam {}
// SAFETY: Shared access only reads the tables; guest memory itself is accessed with
// atomic or byte copies that tolerate concurrent writers (userspace has it mapped too).
unsafe impl Sync for GuestRam {}

impl GuestRam {
    /// Allocates `size` bytes of zeroed guest memory (a multiple of the page size, checked
    /// by the caller), charged to the caller's memory cgroup; `EINTR` on a signal.
    pub(crate) fn new(size: u64) -> Result<Self> {
        let n = (size / uapi::SHADOWVM_PAGE_SIZE) as usize;
        // Everything a VM allocates is charged to its opener's memory cgroup, as KVM does.
        let mut pages = KVVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
        let mut frames = KVVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..n {
            let page = Page::alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO)?;
            let frame = GuestFrame {
                ptr: crate::glue::page_virt(&page),
                hpa: crate::glue::page_phys(&page),
            };
            frames.push(frame, GFP_KERNEL_ACCOUNT)?;
            pages.push(page, GFP_KERNEL_ACCOUNT)?;
            // Allocating a large guest must not hog the CPU.
            crate::glue::cond_resched();
            if kernel::current!().signal_pending() {
                return Err(EINTR);
            }
        }
        // INVARIANT: frames[i] describes pages[i].
        Ok(Self { pages, frames })
    }

    /// Size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.pages.len() as u64 * uapi::SHADOWVM_PAGE_SIZE
    }

    /// The pages from guest page number `first` on (for mmap).
    pub(crate) fn pages_from(&self, first: usize) -> impl Iterator<Item = &Page> {
        self.pages.iter().skip(first)
    }

    /// Copies guest-physical memory out; false if any byte is not RAM.
    pub(crate) fn read(&self, gpa: u64, dst: &mut [u8]) -> bool {
        let off = (gpa & 0xfff) as usize;
        if off + dst.len() > 4096 {
            return false;
        }
        let Some(f) = self.frame(gpa >> 12) else {
            return false;
        };
        // SAFETY: `f.ptr` is a 4 KiB frame of guest RAM (GuestMemory contract); the range
        // is inside it. Guest memory may change concurrently (userspace mapping): bytes.
        unsafe { core::ptr::copy_nonoverlapping(f.ptr.add(off), dst.as_mut_ptr(), dst.len()) };
        true
    }
}

// SAFETY: `frames` entries point to 4 KiB kernel pages owned by `self` (type invariant),
// mapped for as long as the engine call that got them (the VM lock is held across it).
unsafe impl GuestMemory for GuestRam {
    fn frame(&self, gfn: u64) -> Option<GuestFrame> {
        self.frames.get(usize::try_from(gfn).ok()?).copied()
    }
}
