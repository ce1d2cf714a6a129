// SPDX-License-Identifier: GPL-2.0

//! QEMU's firmware configuration device, legacy I/O interface: a 16-bit selector at port
//! 0x510 picks an item, port 0x511 reads it a byte at a time. No DMA (the ID item says so).
//! The items are the ones QEMU has for a Multiboot `-kernel` boot, with the same values.

use std::collections::BTreeMap;

/// Selector port (QEMU also reads data here).
pub const SELECTOR_PORT: u16 = 0x510;
/// Data port.
pub const DATA_PORT: u16 = 0x511;

/// Item keys (QEMU's include/standard-headers/linux/qemu_fw_cfg.h).
pub mod key {
    pub const SIGNATURE: u16 = 0x00;
    pub const ID: u16 = 0x01;
    pub const RAM_SIZE: u16 = 0x03;
    pub const NB_CPUS: u16 = 0x05;
    pub const KERNEL_ADDR: u16 = 0x07;
    pub const KERNEL_SIZE: u16 = 0x08;
    pub const INITRD_ADDR: u16 = 0x0a;
    pub const INITRD_SIZE: u16 = 0x0b;
    pub const MAX_CPUS: u16 = 0x0f;
    pub const KERNEL_ENTRY: u16 = 0x10;
    pub const KERNEL_DATA: u16 = 0x11;
    pub const INITRD_DATA: u16 = 0x12;
    pub const CMDLINE_SIZE: u16 = 0x14;
    pub const CMDLINE_DATA: u16 = 0x15;
    pub const FILE_DIR: u16 = 0x19;
    /// First key given to a file.
    pub const FILE_FIRST: u16 = 0x20;
}

/// Selector bit for x86-specific items (none are provided).
const ARCH_LOCAL: u16 = 0x8000;
/// The selector's item number; bit 14 only asks for the (unsupported) write channel.
const ENTRY_MASK: u16 = 0x3fff;
/// ID feature bits: the traditional interface, no DMA.
const ID_TRADITIONAL: u32 = 1;
/// Length of a file name in a directory entry, NUL included.
const FILE_NAME_LEN: usize = 56;

/// The Multiboot items QEMU hands its option ROM (see `hw/i386/multiboot.c`).
pub struct MultibootItems {
    pub entry: u32,
    /// The kernel, module list, strings and modules, as loaded (KERNEL_*).
    pub kernel_addr: u32,
    pub kernel_data: Vec<u8>,
    /// The Multiboot information structure (INITRD_*).
    pub info_addr: u32,
    pub info: Vec<u8>,
}

/// # Invariants
/// `offset` counts bytes read from `selected` since it was selected.
pub struct FwCfg {
    items: BTreeMap<u16, Vec<u8>>,
    files: Vec<(String, u16)>,
    selected: Option<u16>,
    offset: usize,
}

impl FwCfg {
    /// The items every QEMU PC has: signature, ID, CPU counts, RAM size, and the file
    /// directory with `etc/e820` (`e820` is its table: address, length, type per entry).
    pub fn new(ram_size: u64, cpus: u16, e820: &[(u64, u64, u32)]) -> Self {
        let mut s = Self {
            items: BTreeMap::new(),
            files: Vec::new(),
            selected: None,
            offset: 0,
        };
        s.items.insert(key::SIGNATURE, b"QEMU".to_vec());
        s.items
            .insert(key::ID, ID_TRADITIONAL.to_le_bytes().to_vec());
        s.items.insert(key::NB_CPUS, cpus.to_le_bytes().to_vec());
        s.items.insert(key::MAX_CPUS, cpus.to_le_bytes().to_vec());
        s.items
            .insert(key::RAM_SIZE, ram_size.to_le_bytes().to_vec());
        let mut table = Vec::new();
        for (addr, len, kind) in e820 {
            table.extend_from_slice(&addr.to_le_bytes());
            table.extend_from_slice(&len.to_le_bytes());
            table.extend_from_slice(&kind.to_le_bytes());
        }
        s.add_file("etc/e820", table);
        s
    }

    /// What QEMU passes its Multiboot option ROM. (QEMU has no CMDLINE items for a
    /// Multiboot boot: the command line is in the information structure.)
    pub fn add_multiboot(&mut self, m: MultibootItems) {
        let u32_item = |v: u32| v.to_le_bytes().to_vec();
        self.items.insert(key::KERNEL_ENTRY, u32_item(m.entry));
        self.items.insert(key::KERNEL_ADDR, u32_item(m.kernel_addr));
        self.items
            .insert(key::KERNEL_SIZE, u32_item(m.kernel_data.len() as u32));
        self.items.insert(key::KERNEL_DATA, m.kernel_data);
        self.items.insert(key::INITRD_ADDR, u32_item(m.info_addr));
        self.items
            .insert(key::INITRD_SIZE, u32_item(m.info.len() as u32));
        self.items.insert(key::INITRD_DATA, m.info);
    }

    /// The command line as QEMU gives it for a Linux boot: its size with the NUL, and the
    /// string with the NUL.
    pub fn add_cmdline(&mut self, cmdline: &str) {
        let mut data = cmdline.as_bytes().to_vec();
        data.push(0);
        self.items.insert(
            key::CMDLINE_SIZE,
            (data.len() as u32).to_le_bytes().to_vec(),
        );
        self.items.insert(key::CMDLINE_DATA, data);
    }

    fn add_file(&mut self, name: &str, data: Vec<u8>) {
        let k = key::FILE_FIRST + self.files.len() as u16;
        self.files.push((name.to_string(), k));
        self.items.insert(k, data);
        let mut dir = (self.files.len() as u32).to_be_bytes().to_vec();
        for (name, k) in &self.files {
            let size = self.items.get(k).map_or(0, Vec::len);
            dir.extend_from_slice(&(size as u32).to_be_bytes());
            dir.extend_from_slice(&k.to_be_bytes());
            dir.extend_from_slice(&[0, 0]);
            let mut field = [0u8; FILE_NAME_LEN];
            let n = name.len().min(FILE_NAME_LEN - 1);
            field[..n].copy_from_slice(&name.as_bytes()[..n]);
            dir.extend_from_slice(&field);
        }
        self.items.insert(key::FILE_DIR, dir);
    }

    /// A write to the selector: picks the item and rewinds it.
    pub fn select(&mut self, selector: u16) {
        self.selected = (selector & ARCH_LOCAL == 0).then_some(selector & ENTRY_MASK);
        self.offset = 0;
    }

    /// The next byte of the selected item; 0 past its end or for an item that does not
    /// exist, as in QEMU.
    pub fn read_byte(&mut self) -> u8 {
        let b = self
            .selected
            .and_then(|k| self.items.get(&k))
            .and_then(|item| item.get(self.offset).copied());
        if b.is_some() {
            self.offset += 1;
        }
        b.unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(f: &mut FwCfg, k: u16, n: usize) -> Vec<u8> {
        f.select(k);
        (0..n).map(|_| f.read_byte()).collect()
    }

    fn read_u32(f: &mut FwCfg, k: u16) -> u32 {
        u32::from_le_bytes(read(f, k, 4).try_into().unwrap())
    }

    fn sample() -> FwCfg {
        FwCfg::new(128 << 20, 1, &[(0, 128 << 20, 1)])
    }

    #[test]
    fn standard_items() {
        let mut f = sample();
        assert_eq!(read(&mut f, key::SIGNATURE, 6), b"QEMU\0\0");
        assert_eq!(read_u32(&mut f, key::ID), 1, "traditional, no DMA");
        assert_eq!(read(&mut f, key::NB_CPUS, 2), [1, 0]);
        assert_eq!(read(&mut f, key::MAX_CPUS, 2), [1, 0]);
        assert_eq!(read(&mut f, key::RAM_SIZE, 8), (128u64 << 20).to_le_bytes());
        // Unknown, arch-local and absent items read 0.
        assert_eq!(read(&mut f, 0x1234, 4), [0; 4]);
        assert_eq!(read(&mut f, 0x8003, 4), [0; 4]);
        assert_eq!(read(&mut f, key::CMDLINE_SIZE, 4), [0; 4]);
        assert_eq!(read(&mut f, key::KERNEL_ADDR, 4), [0; 4]);
        // The write-channel bit selects the same item.
        assert_eq!(read(&mut f, 0x4000 | key::SIGNATURE, 4), b"QEMU");
    }

    #[test]
    fn reads_auto_increment_and_reselect_rewinds() {
        let mut f = sample();
        f.select(key::SIGNATURE);
        assert_eq!(f.read_byte(), b'Q');
        assert_eq!(f.read_byte(), b'E');
        f.select(key::SIGNATURE);
        assert_eq!(f.read_byte(), b'Q');
    }

    #[test]
    fn file_directory_lists_e820() {
        let mut f = sample();
        let dir = read(&mut f, key::FILE_DIR, 4 + 64);
        assert_eq!(&dir[..4], &1u32.to_be_bytes(), "one file, big-endian count");
        assert_eq!(&dir[4..8], &20u32.to_be_bytes(), "size");
        assert_eq!(&dir[8..10], &0x20u16.to_be_bytes(), "selector");
        assert_eq!(&dir[12..20], b"etc/e820");
        assert!(dir[20..68].iter().all(|&b| b == 0));
        let e820 = read(&mut f, 0x20, 20);
        assert_eq!(&e820[..8], &0u64.to_le_bytes());
        assert_eq!(&e820[8..16], &(128u64 << 20).to_le_bytes());
        assert_eq!(&e820[16..20], &1u32.to_le_bytes());
        assert_eq!(f.read_byte(), 0, "past the end");
    }

    #[test]
    fn multiboot_and_cmdline_items() {
        let mut f = sample();
        f.add_multiboot(MultibootItems {
            entry: 0x10_000c,
            kernel_addr: 0x10_0000,
            kernel_data: vec![7; 0x6000],
            info_addr: 0x9500,
            info: vec![9; 88],
        });
        assert_eq!(read_u32(&mut f, key::KERNEL_ENTRY), 0x10_000c);
        assert_eq!(read_u32(&mut f, key::KERNEL_ADDR), 0x10_0000);
        assert_eq!(read_u32(&mut f, key::KERNEL_SIZE), 0x6000);
        assert_eq!(read_u32(&mut f, key::INITRD_ADDR), 0x9500);
        assert_eq!(read_u32(&mut f, key::INITRD_SIZE), 88);
        assert_eq!(read(&mut f, key::INITRD_DATA, 89)[87..], [9, 0]);
        assert_eq!(read(&mut f, key::KERNEL_DATA, 2), [7, 7]);
        f.add_cmdline("console=ttyS0");
        assert_eq!(read_u32(&mut f, key::CMDLINE_SIZE), 14);
        assert_eq!(read(&mut f, key::CMDLINE_DATA, 14), b"console=ttyS0\0");
    }
}
