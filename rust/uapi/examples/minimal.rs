//! Minimal /dev/shadowvm client: run 32-bit code that prints "Hi" and exits with 0.
use shadowvm_uapi::*;
use std::io::{Error, Write};
use std::os::fd::AsRawFd;

const CODE: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03, // mov $0x3f8, %dx
    0xb0, b'H', 0xee, // mov $'H', %al; out %al, (%dx)
    0xb0, b'i', 0xee, // mov $'i', %al; out %al, (%dx)
    0xb0, b'\n', 0xee, // mov $'\n', %al; out %al, (%dx)
    0x66, 0xba, 0xf4, 0x00, // mov $0xf4, %dx
    0x31, 0xc0, 0xef, // xor %eax, %eax; out %eax, (%dx): exit status 0
    0xf4, // hlt
];

fn ioctl<T>(fd: i32, cmd: u32, arg: *mut T) -> Result<i32, Error> {
    // SAFETY: `cmd` encodes the size of `T`; `arg` is valid or null for _IO commands.
    let r = unsafe { libc::ioctl(fd, libc::c_ulong::from(cmd), arg) };
    if r < 0 {
        Err(Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn mmap(fd: i32, len: u64, offset: u64) -> Result<*mut u8, Error> {
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: a new shared mapping of the VM file; nothing else aliases it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            prot,
            libc::MAP_SHARED,
            fd,
            offset as i64,
        )
    };
    if p == libc::MAP_FAILED {
        Err(Error::last_os_error())
    } else {
        Ok(p.cast())
    }
}

fn flat(selector: u16, type_: u8) -> Segment {
    Segment {
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        db: 1,
        s: 1,
        g: 1,
        ..Default::default()
    }
}

fn main() -> Result<(), Error> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/shadowvm")?;
    let fd = file.as_raw_fd();
    assert_eq!(
        ioctl::<u8>(fd, SHADOWVM_GET_API_VERSION, std::ptr::null_mut())?,
        SHADOWVM_API_VERSION as i32
    );
    let mut mem = Memory {
        size: 64 << 20,
        flags: 0,
    };
    ioctl(fd, SHADOWVM_SET_MEMORY, &mut mem)?;
    ioctl::<u8>(fd, SHADOWVM_CREATE_VCPU, std::ptr::null_mut())?;
    let ram = mmap(fd, mem.size, SHADOWVM_MEMORY_MMAP_OFFSET)?;
    let run = mmap(fd, SHADOWVM_RUN_MMAP_SIZE, SHADOWVM_RUN_MMAP_OFFSET)?.cast::<Run>();
    // SAFETY: 1 MiB + CODE.len() is inside the 64 MiB mapping.
    unsafe { std::ptr::copy_nonoverlapping(CODE.as_ptr(), ram.add(0x10_0000), CODE.len()) };

    // 32-bit protected mode, paging off, flat segments, as the launcher's --start protected.
    let data = flat(0x18, 0x3);
    let mut sregs = Sregs {
        cs: flat(0x10, 0xb),
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: Segment {
            base: 0x1100,
            limit: 0x67,
            selector: 0x20,
            type_: 0xb,
            present: 1,
            ..Default::default()
        },
        ldt: Segment {
            type_: 0x2,
            unusable: 1,
            ..Default::default()
        },
        gdt: Dtable {
            base: 0x1000,
            limit: 0x2f,
            padding: [0; 3],
        },
        cr0: 0x11, // PE | ET
        ..Default::default()
    };
    let mut regs = Regs {
        rip: 0x10_0000,
        rflags: SHADOWVM_RFLAGS_FIXED1,
        ..Default::default()
    };
    ioctl(fd, SHADOWVM_SET_SREGS, &mut sregs)?;
    ioctl(fd, SHADOWVM_SET_REGS, &mut regs)?;

    loop {
        match ioctl::<u8>(fd, SHADOWVM_RUN, std::ptr::null_mut()) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue, // signal: run again
            r => r?,
        };
        // SAFETY: the kernel does not touch the run page between RUN calls.
        let run = unsafe { &mut *run };
        match run.exit_reason {
            SHADOWVM_EXIT_IO => {
                let io = run.io_mut();
                match (io.direction, io.port) {
                    // The value is picked up by the next RUN.
                    (SHADOWVM_IO_IN, port) => io.data = if port == 0x3fd { 0x60 } else { 0 },
                    (_, 0x3f8) => std::io::stdout().write_all(&[io.data as u8])?,
                    (_, 0xf4) => std::process::exit(io.data as i32),
                    _ => {}
                }
            }
            SHADOWVM_EXIT_INTR => {}
            SHADOWVM_EXIT_HLT => return Ok(()),
            r => panic!("unexpected exit {}", exit_reason_name(r)),
        }
    }
}
