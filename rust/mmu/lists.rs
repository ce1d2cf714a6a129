// SPDX-License-Identifier: GPL-2.0

//! Reference lists: the parent list of a shadow page (the non-leaf entries pointing to
//! it) and the reverse map of a guest frame (the leaf entries mapping it).
//!
//! Every reference (`sp`, `slot`) is on exactly one list, and the side page at (`sp`,
//! `slot`) records where in that list it sits ([`super::sp::Side::pos`]), so removal is O(1)
//! instead of a scan of the whole list.

use core::num::NonZeroU32;

use super::pool::{Id, Record};
use super::sp::SpId;
use super::Mmu;

/// Reference to a shadow entry: (shadow page, slot), as `(sp << 9) | slot`.
///
/// # Invariants
///
/// The shadow page's id is below 2^20 (the pool's limit), so the value is at least 512
/// and bit 31 ([`ListHead`]'s tag) is clear.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct SRef(NonZeroU32);

const SLOT_BITS: u32 = 9;
/// 512 as a `NonZeroU32`, to shift an id left without leaving `NonZeroU32`.
const SLOT_SPAN: NonZeroU32 = match NonZeroU32::new(1 << SLOT_BITS) {
    Some(n) => n,
    None => NonZeroU32::MIN,
};

impl SRef {
    /// The reference to entry `slot & 511` of `sp`.
    pub(super) fn new(sp: SpId, slot: usize) -> SRef {
        // Ids are below 2^20 (invariant): the product does not saturate.
        let v = NonZeroU32::new(sp.raw()).map_or(NonZeroU32::MIN, |n| n.saturating_mul(SLOT_SPAN));
        SRef(v | (slot as u32 & 511))
    }

    /// The shadow page.
    pub(super) fn sp(self) -> Option<SpId> {
        Id::from_raw((self.0.get() & !SINGLE) >> SLOT_BITS)
    }

    /// The slot in the shadow page.
    pub(super) fn slot(self) -> usize {
        (self.0.get() & 511) as usize
    }
}

/// Tag of a list head that holds one reference directly.
const SINGLE: u32 = 1 << 31;

/// The head of a reference list: empty, one reference held in the head itself, or the
/// first block of a chain of [`Desc`] blocks.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct ListHead(u32);

/// What a [`ListHead`] holds.
enum List {
    Empty,
    One(SRef),
    Blocks(DescId),
}

impl ListHead {
    /// The empty list.
    pub(super) const EMPTY: ListHead = ListHead(0);

    fn one(r: SRef) -> ListHead {
        ListHead(r.0.get() | SINGLE)
    }

    fn blocks(d: DescId) -> ListHead {
        ListHead(d.raw())
    }

    fn view(self) -> List {
        if self.0 & SINGLE != 0 {
            match NonZeroU32::new(self.0 & !SINGLE) {
                Some(r) => List::One(SRef(r)),
                None => List::Empty,
            }
        } else {
            match Id::from_raw(self.0) {
                Some(d) => List::Blocks(d),
                None => List::Empty,
            }
        }
    }

    /// Whether the list is empty.
    pub(super) fn is_empty(self) -> bool {
        matches!(self.view(), List::Empty)
    }
}

/// A block of a reference list: 15 references and a link. The head block keeps its
/// references as a prefix; later blocks are full.
#[repr(C)]
pub(super) struct Desc {
    refs: [Option<SRef>; 15],
    next: Option<DescId>,
}
const _: () = assert!(core::mem::size_of::<Desc>() == 64);
// SAFETY: repr(C), 64 bytes (asserted above), align 4, any bit pattern valid (ids and
// references are `NonZeroU32` wrappers in `Option`s).
unsafe impl Record for Desc {}

/// Id of a list block.
pub(super) type DescId = Id<Desc>;

/// List position of slot `i` of block `d` (ids fit 20 bits, see [`super::pool::MAX_RECS`];
/// 0 means "held in the head").
fn pos_of(d: DescId, i: usize) -> u64 {
    (u64::from(d.raw()) << 4) | (i as u64 & 15)
}

impl Mmu {
    /// Records that reference `r` now sits at list position `pos` (0: in the head itself).
    fn set_pos(&mut self, r: SRef, pos: u64) {
        if let Some(sp) = r.sp() {
            let v = self.side_get(sp, r.slot());
            self.side_set(sp, r.slot(), v.with_pos(pos));
        }
    }

    /// Adds `r` to the list at `head`; returns the new head. The caller reserved records
    /// (top-up), so the block allocation cannot fail.
    pub(super) fn list_add(&mut self, head: ListHead, r: SRef) -> ListHead {
        let blocks = match head.view() {
            List::Empty => {
                self.set_pos(r, 0);
                return ListHead::one(r);
            }
            List::One(old) => {
                let Some(d) = self.pool.alloc::<Desc>() else {
                    // Unreachable after top-up: keep the list exact by not linking `r`.
                    return head;
                };
                let desc = self.pool.get_mut(d);
                desc.refs[0] = Some(old);
                desc.refs[1] = Some(r);
                self.set_pos(old, pos_of(d, 0));
                self.set_pos(r, pos_of(d, 1));
                return ListHead::blocks(d);
            }
            List::Blocks(b) => b,
        };
        let free = self.pool.get(blocks).refs.iter().position(|x| x.is_none());
        if let Some(i) = free {
            if let Some(x) = self.pool.get_mut(blocks).refs.get_mut(i) {
                *x = Some(r);
            }
            self.set_pos(r, pos_of(blocks, i));
            return head;
        }
        let Some(d) = self.pool.alloc::<Desc>() else {
            return head;
        };
        let desc = self.pool.get_mut(d);
        desc.refs[0] = Some(r);
        desc.next = Some(blocks);
        self.set_pos(r, pos_of(d, 0));
        ListHead::blocks(d)
    }

    /// Removes `r`, which sits at position `pos`, from the list at `head`; returns the new
    /// head and whether `r` was found. O(1): the last reference of the head block fills
    /// the hole.
    pub(super) fn list_remove(&mut self, head: ListHead, r: SRef, pos: u64) -> (ListHead, bool) {
        let hd = match head.view() {
            List::Empty => return (ListHead::EMPTY, false),
            List::One(x) => {
                return if x == r {
                    (ListHead::EMPTY, true)
                } else {
                    (head, false)
                };
            }
            List::Blocks(hd) => hd,
        };
        let fi = (pos & 15) as usize;
        let Some(fd) = Id::<Desc>::from_raw((pos >> 4) as u32) else {
            // Not expected (positions are exact); leave the list alone.
            return (head, false);
        };
        if self.pool.get(fd).refs.get(fi).copied() != Some(Some(r)) {
            return (head, false);
        }
        self.work = self.work.wrapping_add(1);
        let (li, lv) = {
            let desc = self.pool.get(hd);
            let n = desc.refs.iter().position(|x| x.is_none()).unwrap_or(15);
            let li = n.saturating_sub(1);
            (li, desc.refs.get(li).copied().flatten())
        };
        if let Some(x) = self.pool.get_mut(fd).refs.get_mut(fi) {
            *x = lv;
        }
        if let Some(lv) = lv {
            if lv != r {
                self.set_pos(lv, pos_of(fd, fi));
            }
        }
        if let Some(x) = self.pool.get_mut(hd).refs.get_mut(li) {
            *x = None;
        }
        let (n, next, first) = {
            let desc = self.pool.get(hd);
            (li, desc.next, desc.refs[0])
        };
        if n == 0 {
            self.pool.free(hd);
            return (next.map_or(ListHead::EMPTY, ListHead::blocks), true);
        }
        if n == 1 && next.is_none() {
            self.pool.free(hd);
            if let Some(first) = first {
                self.set_pos(first, 0);
                return (ListHead::one(first), true);
            }
            return (ListHead::EMPTY, true);
        }
        (head, true)
    }

    /// First reference of a list.
    pub(super) fn list_first(&self, head: ListHead) -> Option<SRef> {
        match head.view() {
            List::Empty => None,
            List::One(r) => Some(r),
            List::Blocks(d) => self.pool.get(d).refs.iter().copied().flatten().next(),
        }
    }

    /// Calls `f` on every reference of a list; `f` must not change the list.
    pub(super) fn list_for_each(&mut self, head: ListHead, mut f: impl FnMut(&mut Mmu, SRef)) {
        let mut d = match head.view() {
            List::Empty => return,
            List::One(r) => {
                f(self, r);
                return;
            }
            List::Blocks(d) => Some(d),
        };
        while let Some(b) = d {
            self.work = self.work.wrapping_add(15);
            for i in 0..15 {
                // Read afresh each time: `f` may change the block.
                if let Some(r) = self.pool.get(b).refs.get(i).copied().flatten() {
                    f(self, r);
                }
            }
            d = self.pool.get(b).next;
        }
    }
}
