// SPDX-License-Identifier: GPL-2.0

//! Shadow-page roles: what besides the guest frame decides a shadow page's contents.

use super::walk::{GuestMode, PagingCtx};

/// A shadow page's role: everything besides the guest frame that changes its contents.
///
/// Bits: 0-2 level, 3-4 guest mode, 5 direct, 6-7 quadrant, 8-10 inherited access
/// (W, U, X), 11 CR0.WP, 12 CR4.SMEP && !CR0.WP, 13 EFER.NXE, 14 CR4.PSE,
/// 15 CR4.SMAP && !CR0.WP. Any bit pattern is a role (records hold it).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Role(pub u32);

const WP: u32 = 1 << 11;
const SMEP_ANDNOT_WP: u32 = 1 << 12;
const NXE: u32 = 1 << 13;
const PSE: u32 = 1 << 14;
const SMAP_ANDNOT_WP: u32 = 1 << 15;
const DIRECT: u32 = 1 << 5;

impl Role {
    /// The role bits the paging context decides (level, direct, quadrant, access 0).
    pub(super) const fn base(ctx: &PagingCtx) -> Role {
        let mut r = ctx.mode.code() << 3;
        if ctx.wp {
            r |= WP;
        }
        if ctx.smep && !ctx.wp {
            r |= SMEP_ANDNOT_WP;
        }
        if ctx.nxe {
            r |= NXE;
        }
        if ctx.pse && matches!(ctx.mode, GuestMode::Bits32) {
            r |= PSE;
        }
        // Shadows built under CR0.WP=0 may hold supervisor-writable copies of read-only
        // user pages; SMAP must not see those (KVM's smap_andnot_wp).
        if ctx.smap && !ctx.wp {
            r |= SMAP_ANDNOT_WP;
        }
        Role(r)
    }

    /// Shadow table level, 1..=4.
    pub(super) fn level(self) -> u8 {
        (self.0 & 7) as u8
    }

    /// The guest paging mode the page shadows.
    pub(super) fn mode(self) -> GuestMode {
        match (self.0 >> 3) & 3 {
            0 => GuestMode::Off,
            1 => GuestMode::Bits32,
            2 => GuestMode::Pae,
            _ => GuestMode::Long4,
        }
    }

    /// The page maps a guest large page or guest-physical memory (no guest table).
    pub(super) fn direct(self) -> bool {
        self.0 & DIRECT != 0
    }

    /// Which part of a 32-bit guest table the page shadows.
    pub(super) fn quadrant(self) -> u32 {
        (self.0 >> 6) & 3
    }

    /// Access rights (ACC_*) the levels above grant.
    pub(super) fn access(self) -> u8 {
        ((self.0 >> 8) & 7) as u8
    }

    /// This role with another level, direct bit, quadrant and inherited access.
    pub(super) fn with(self, level: u8, direct: bool, quadrant: u32, access: u8) -> Role {
        let mut r = self.0 & !(7 | DIRECT | (3 << 6) | (7 << 8));
        r |= u32::from(level) & 7;
        if direct {
            r |= DIRECT;
        }
        r |= (quadrant & 3) << 6;
        r |= (u32::from(access) & 7) << 8;
        Role(r)
    }

    /// A paging context that interprets guest entries as a shadow page of this role does.
    #[inline]
    pub(super) fn ctx(self, cur: &PagingCtx) -> PagingCtx {
        let mut c = *cur;
        c.mode = self.mode();
        c.nxe = self.0 & NXE != 0;
        c.pse = self.0 & PSE != 0;
        c.wp = self.0 & WP != 0;
        c
    }
}
