// SPDX-License-Identifier: GPL-2.0

//! An owned shared mapping, unmapped on drop.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

pub struct Mmap {
    ptr: *mut u8,
    len: usize,
}

impl Mmap {
    /// Maps `len` bytes of `fd` at `offset` (MAP_SHARED, read/write).
    pub fn file(fd: BorrowedFd<'_>, len: usize, offset: u64) -> io::Result<Self> {
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        Self::map(len, libc::MAP_SHARED, fd.as_raw_fd(), offset)
    }

    /// Anonymous shared memory of `len` bytes, allocated as it is first touched.
    pub fn anonymous(len: usize) -> io::Result<Self> {
        Self::map(len, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0)
    }

    /// Anonymous shared memory of `len` bytes, every page allocated now (MAP_POPULATE) and
    /// locked in RAM (mlock), so that using it never faults in the host (guest RAM for KVM).
    pub fn anonymous_locked(len: usize) -> io::Result<Self> {
        let map = Self::map(
            len,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )?;
        // SAFETY: locks exactly the mapping just created, which `map` owns.
        if unsafe { libc::mlock(map.ptr.cast(), map.len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(map)
    }

    fn map(len: usize, flags: i32, fd: i32, offset: libc::off_t) -> io::Result<Self> {
        // SAFETY: a fresh mapping chosen by the kernel; it aliases nothing we own.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn mapped_len(&self) -> usize {
        self.len
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` bytes, readable and writable, and lives as long as
        // `self`; the guest may change it concurrently only while the vCPU runs, which needs
        // `&mut` on the backend and so cannot overlap this borrow.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `map`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
