// SPDX-License-Identifier: GPL-2.0

//! An intrusive doubly linked list of pool records: the shadow pages' LRU list, the root
//! cache's most-recently-used list and the out-of-sync frame list are all one [`DList`],
//! each over the link fields ([`Links`]) its record type keeps for it.
//!
//! The list owns no memory: its nodes are records of the [`Pool`], reached by id, so
//! adding, removing and moving a record to the front are O(1) and never allocate.

use core::marker::PhantomData;

use super::pool::{Id, Pool, Record};

/// The link fields a record keeps for one list: its neighbours, `None` at the ends and
/// while the record is on no list.
#[repr(C)]
pub(super) struct Links<T> {
    prev: Option<Id<T>>,
    next: Option<Id<T>>,
}

/// Which [`Links`] of which record type a [`DList`] runs through (a record type may be on
/// several lists, one field each). Implemented by empty marker types.
pub(super) trait Adapter {
    /// The record type on the list.
    type Rec: Record;
    /// The record's link fields for this list.
    fn links(rec: &Self::Rec) -> &Links<Self::Rec>;
    /// The record's link fields for this list, to change them.
    fn links_mut(rec: &mut Self::Rec) -> &mut Links<Self::Rec>;
}

/// Declares `$name`, the [`Adapter`] of the lists that run through field `$field` (a
/// [`Links`]) of record type `$rec`. The caller has `Adapter` and `Links` in scope.
macro_rules! adapter {
    ($(#[$doc:meta])* $vis:vis $name:ident = $rec:ident.$field:ident) => {
        $(#[$doc])*
        $vis enum $name {}

        impl Adapter for $name {
            type Rec = $rec;
            fn links(rec: &$rec) -> &Links<$rec> {
                &rec.$field
            }
            fn links_mut(rec: &mut $rec) -> &mut Links<$rec> {
                &mut rec.$field
            }
        }
    };
}
pub(super) use adapter;

/// A doubly linked list of records, from the front (`head`, newest) to the back (`tail`).
///
/// # Invariants
///
/// Following `next` from `head` visits `len` distinct live records and ends at `tail`;
/// following `prev` from `tail` visits the same records backwards. Both ends are `None`
/// exactly when `len == 0`. The first record's `prev` and the last one's `next` are
/// `None`, and a record on no list has both links `None`. A record is on at most one list
/// of an adapter (the engine keeps one list per adapter).
pub(super) struct DList<A: Adapter> {
    head: Option<Id<A::Rec>>,
    tail: Option<Id<A::Rec>>,
    len: usize,
    adapter: PhantomData<A>,
}

impl<A: Adapter> DList<A> {
    /// An empty list.
    pub(super) const fn new() -> Self {
        DList {
            head: None,
            tail: None,
            len: 0,
            adapter: PhantomData,
        }
    }

    /// Number of records on the list.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The front (newest) record.
    pub(super) fn head(&self) -> Option<Id<A::Rec>> {
        self.head
    }

    /// The back (oldest) record.
    pub(super) fn tail(&self) -> Option<Id<A::Rec>> {
        self.tail
    }

    /// The record after `id` (towards the back).
    pub(super) fn next(pool: &Pool, id: Id<A::Rec>) -> Option<Id<A::Rec>> {
        A::links(pool.get(id)).next
    }

    /// The record before `id` (towards the front).
    pub(super) fn prev(pool: &Pool, id: Id<A::Rec>) -> Option<Id<A::Rec>> {
        A::links(pool.get(id)).prev
    }

    /// Whether `id` is on this list (given that it is on no other list of the adapter).
    pub(super) fn contains(&self, pool: &Pool, id: Id<A::Rec>) -> bool {
        let l = A::links(pool.get(id));
        l.prev.is_some() || l.next.is_some() || self.head == Some(id)
    }

    /// Adds `id`, which is on no list, at the front.
    pub(super) fn push_front(&mut self, pool: &mut Pool, id: Id<A::Rec>) {
        self.link_front(pool, id);
        // Bounded by the live records (the pool holds at most 2^20).
        self.len = self.len.saturating_add(1);
    }

    /// Takes `id` off the list; false (nothing changed) if it was not on it.
    pub(super) fn remove(&mut self, pool: &mut Pool, id: Id<A::Rec>) -> bool {
        if !self.contains(pool, id) {
            return false;
        }
        self.unlink(pool, id);
        // len >= 1: `id` was on the list.
        self.len = self.len.saturating_sub(1);
        true
    }

    /// Moves `id`, which is on the list, to the front.
    pub(super) fn move_to_front(&mut self, pool: &mut Pool, id: Id<A::Rec>) {
        if self.head != Some(id) {
            self.unlink(pool, id);
            self.link_front(pool, id);
        }
    }

    /// Forgets every record (when the pool that holds them is released). The records'
    /// links are left as they are.
    pub(super) fn clear(&mut self) {
        *self = DList::new();
    }

    fn link_front(&mut self, pool: &mut Pool, id: Id<A::Rec>) {
        let h = self.head;
        let l = A::links_mut(pool.get_mut(id));
        l.prev = None;
        l.next = h;
        match h {
            Some(h) => A::links_mut(pool.get_mut(h)).prev = Some(id),
            None => self.tail = Some(id),
        }
        self.head = Some(id);
    }

    fn unlink(&mut self, pool: &mut Pool, id: Id<A::Rec>) {
        let l = A::links(pool.get(id));
        let (p, n) = (l.prev, l.next);
        match p {
            Some(p) => A::links_mut(pool.get_mut(p)).next = n,
            None if self.head == Some(id) => self.head = n,
            None => {}
        }
        match n {
            Some(n) => A::links_mut(pool.get_mut(n)).prev = p,
            None if self.tail == Some(id) => self.tail = p,
            None => {}
        }
        let l = A::links_mut(pool.get_mut(id));
        l.prev = None;
        l.next = None;
    }
}

#[cfg(test)]
mod tests {
    use super::super::mem::test_heap::Heap;
    use super::super::mem::PageSource;
    use super::*;
    use std::vec::Vec;

    /// A record on two lists at once, through two adapters.
    #[repr(C)]
    struct Node {
        value: u32,
        a: Links<Node>,
        b: Links<Node>,
    }
    const _: () = assert!(core::mem::size_of::<Node>() == 20);
    // SAFETY: repr(C), 20 bytes, align 4, an integer and `Links` (`Option<Id>`s):
    // any bit pattern is valid.
    unsafe impl Record for Node {}

    adapter!(ByA = Node.a);
    adapter!(ByB = Node.b);

    /// A pool with one record page and `n` records numbered 0..n.
    fn pool_with(n: u32) -> (Pool, Vec<Id<Node>>) {
        let mut pool = Pool::new();
        let mut heap = Heap;
        // SAFETY: fresh pages that only the pool uses until `release`.
        unsafe {
            pool.add_dir(heap.alloc_page(false).unwrap()).unwrap();
            pool.add_page(heap.alloc_page(false).unwrap()).unwrap();
        }
        let ids = (0..n)
            .map(|v| {
                let id = pool.alloc::<Node>().unwrap();
                pool.get_mut(id).value = v;
                id
            })
            .collect();
        (pool, ids)
    }

    /// The values front to back, checked against the walk back to front and `len`.
    fn values<A: Adapter<Rec = Node>>(list: &DList<A>, pool: &Pool) -> Vec<u32> {
        let mut fwd = Vec::new();
        let mut cur = list.head();
        let mut last = None;
        while let Some(id) = cur {
            assert_eq!(
                DList::<A>::prev(pool, id).map(Id::raw),
                last.map(Id::raw),
                "prev"
            );
            fwd.push(pool.get(id).value);
            last = Some(id);
            cur = DList::<A>::next(pool, id);
            assert!(fwd.len() <= 64, "cycle");
        }
        assert_eq!(list.tail().map(Id::raw), last.map(Id::raw), "tail");
        assert_eq!(list.len(), fwd.len(), "len");
        fwd
    }

    #[test]
    fn push_remove_move() {
        let (mut pool, n) = pool_with(4);
        let mut l = DList::<ByA>::new();
        assert_eq!(values(&l, &pool), []);
        for &id in &n {
            l.push_front(&mut pool, id);
        }
        assert_eq!(values(&l, &pool), [3, 2, 1, 0]);
        l.move_to_front(&mut pool, n[0]);
        assert_eq!(values(&l, &pool), [0, 3, 2, 1]);
        l.move_to_front(&mut pool, n[0]);
        assert_eq!(values(&l, &pool), [0, 3, 2, 1]);
        l.move_to_front(&mut pool, n[2]);
        assert_eq!(values(&l, &pool), [2, 0, 3, 1]);
        assert!(l.remove(&mut pool, n[0]));
        assert_eq!(values(&l, &pool), [2, 3, 1]);
        assert!(l.remove(&mut pool, n[1]));
        assert_eq!(values(&l, &pool), [2, 3]);
        assert!(l.remove(&mut pool, n[2]));
        assert_eq!(values(&l, &pool), [3]);
        assert!(l.remove(&mut pool, n[3]));
        assert_eq!(values(&l, &pool), []);
        l.push_front(&mut pool, n[1]);
        assert_eq!(values(&l, &pool), [1]);
        pool.release(&mut Heap);
    }

    #[test]
    fn removing_a_record_not_on_the_list_changes_nothing() {
        let (mut pool, n) = pool_with(3);
        let mut l = DList::<ByA>::new();
        l.push_front(&mut pool, n[0]);
        l.push_front(&mut pool, n[1]);
        assert!(!l.contains(&pool, n[2]));
        assert!(!l.remove(&mut pool, n[2]));
        assert_eq!(values(&l, &pool), [1, 0]);
        assert!(l.remove(&mut pool, n[1]));
        assert!(!l.remove(&mut pool, n[1]));
        assert_eq!(values(&l, &pool), [0]);
        // The only record: no links, but the head.
        assert!(l.contains(&pool, n[0]));
        pool.release(&mut Heap);
    }

    #[test]
    fn one_record_on_two_lists() {
        let (mut pool, n) = pool_with(3);
        let mut a = DList::<ByA>::new();
        let mut b = DList::<ByB>::new();
        for &id in &n {
            a.push_front(&mut pool, id);
            b.push_front(&mut pool, id);
        }
        b.move_to_front(&mut pool, n[0]);
        assert!(a.remove(&mut pool, n[1]));
        assert_eq!(values(&a, &pool), [2, 0]);
        assert_eq!(values(&b, &pool), [0, 2, 1]);
        assert!(b.contains(&pool, n[1]));
        pool.release(&mut Heap);
    }
}
