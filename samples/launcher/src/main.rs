// SPDX-License-Identifier: GPL-2.0

//! `shadowvm-run`: loads a guest image (a Linux bzImage or a Multiboot kernel as
//! `qemu-system-x86_64 -kernel` does, or ELF or flat), runs it on `/dev/shadowvm` or `/dev/kvm` with PC devices, and
//! reports VM exit and MMU statistics. See `--help`, Documentation/uapi.md and
//! Documentation/platform.md.

mod apic;
mod args;
mod backend;
mod boot;
mod cpuid;
mod devices;
mod error;
mod linux;
mod loader;
mod msr;
mod multiboot;
mod pic;
mod pit;
mod platform;
mod report;
mod rtc;
mod runloop;
mod signals;

use args::{BackendKind, Command, Options};
use backend::Backend;
use error::{Error, Kind, Result};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;
use std::sync::mpsc::Receiver;

fn main() -> ExitCode {
    match real_main() {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            eprintln!("shadowvm-run: error: {e}");
            ExitCode::from(e.status())
        }
    }
}

fn real_main() -> Result<u8> {
    let opts = match args::parse(std::env::args().skip(1))? {
        Command::Help => {
            print!("{}", args::USAGE);
            return Ok(0);
        }
        Command::Version => {
            println!(
                "shadowvm-run {} (shadowvm API {})",
                env!("CARGO_PKG_VERSION"),
                shadowvm_uapi::SHADOWVM_API_VERSION
            );
            return Ok(0);
        }
        Command::Run(o) => *o,
    };
    let image = std::fs::read(&opts.image).map_err(|e| {
        Error::new(
            Kind::NoInput,
            format!("cannot read guest image {}: {e}", opts.image.display()),
        )
    })?;
    let modules = opts
        .modules
        .iter()
        .map(|m| {
            std::fs::read(&m.path)
                .map(|data| multiboot::Module {
                    string: m.string.clone(),
                    data,
                })
                .map_err(|e| {
                    Error::new(
                        Kind::NoInput,
                        format!("cannot read --module {}: {e}", m.path.display()),
                    )
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let initrd = opts
        .initrd
        .as_ref()
        .map(|path| {
            std::fs::read(path).map_err(|e| {
                Error::new(
                    Kind::NoInput,
                    format!("cannot read --initrd {}: {e}", path.display()),
                )
            })
        })
        .transpose()?;
    let image_name = opts.image.display().to_string();
    let linux = loader::is_linux(&image, opts.format)
        .map_err(|e| Error::new(e.kind, format!("{image_name}: {}", e.msg)))?;
    let files = GuestFiles {
        image: &image,
        initrd: initrd.as_deref(),
        modules: &modules,
    };
    // Before opening the backend: a mistake on the command line is reported as such.
    check_files(linux, &image_name, &files)?;
    let memory = opts.memory_for(linux);
    let serial: Box<dyn Write> = match &opts.serial_log {
        Some(path) => Box::new(BufWriter::new(File::create(path).map_err(|e| {
            Error::new(
                Kind::Output,
                format!("cannot create --serial-log {}: {e}", path.display()),
            )
        })?)),
        // With --json, stdout carries only the JSON document.
        None if opts.json => Box::new(io::stderr()),
        None => Box::new(BufWriter::new(io::stdout())),
    };

    let mut backend: Box<dyn Backend> = match opts.backend {
        BackendKind::Shadowvm => Box::new(backend::shadowvm::ShadowVm::open(memory)?),
        BackendKind::Kvm => Box::new(backend::kvm::KvmBackend::open(memory, opts.prefault)?),
    };
    // COM1's input: the launcher's stdin.
    let input = devices::uart::spawn_stdin_reader(!opts.quiet);
    run_guest(&opts, &files, backend.as_mut(), serial, Some(input))
}

/// The files the guest is made of.
struct GuestFiles<'a> {
    image: &'a [u8],
    /// `--initrd` (Linux only).
    initrd: Option<&'a [u8]>,
    /// `--module`s (Multiboot only).
    modules: &'a [multiboot::Module],
}

/// `Prepared::kind` of a Linux kernel.
const LINUX_KIND: &str = "linux-bzimage";

/// A loaded guest, ready to enter.
struct Prepared {
    /// What kind of image it was, for the report ("linux-bzimage", `loader::Loaded::kind`).
    kind: &'static str,
    /// The entry state's name for the report (`boot::StartMode::name`, or "linux64").
    start: &'static str,
    regs: shadowvm_uapi::Regs,
    sregs: shadowvm_uapi::Sregs,
    fw_cfg: devices::fw_cfg::FwCfg,
    /// Things the user should know (ignored header flags).
    notes: Vec<String>,
}

/// An initrd goes with a Linux kernel, modules with a Multiboot kernel.
fn check_files(linux: bool, image_name: &str, files: &GuestFiles) -> Result<()> {
    if !linux && files.initrd.is_some() {
        return Err(Error::usage(format!(
            "--initrd needs a Linux bzImage, and {image_name} is not one (no setup header, or a Multiboot header); give a Multiboot kernel's files with --module"
        )));
    }
    if linux && !files.modules.is_empty() {
        return Err(Error::usage(format!(
            "--module needs a Multiboot kernel, and {image_name} is a Linux bzImage: give its initramfs with --initrd"
        )));
    }
    Ok(())
}

/// Loads the guest into `mem` as its format says and returns its entry state.
fn prepare_guest(opts: &Options, files: &GuestFiles, mem: &mut [u8]) -> Result<Prepared> {
    let image_name = opts.image.display().to_string();
    let named = |e: Error| Error::new(e.kind, format!("{image_name}: {}", e.msg));
    let linux = loader::is_linux(files.image, opts.format).map_err(named)?;
    check_files(linux, &image_name, files)?;
    if !linux {
        let (loaded, boot_info, fw_cfg) = load_guest(opts, files.image, files.modules, mem)?;
        let (regs, sregs) = boot::setup(mem, opts.start, loaded.entry, boot_info)?;
        return Ok(Prepared {
            kind: loaded.kind,
            start: opts.start.name(),
            regs,
            sregs,
            fw_cfg,
            notes: loaded.notes,
        });
    }
    let ram_end = mem.len() as u64;
    // Guest RAM is one block from 0, below the APIC pages (`args::validate`).
    let ram = 0..ram_end;
    let boot = linux::load(
        mem,
        std::slice::from_ref(&ram),
        files.image,
        files.initrd,
        &opts.append,
    )
    .map_err(named)?;
    let e820: Vec<_> = boot
        .e820
        .iter()
        .map(|e| (e.addr, e.size, e.kind as u32))
        .collect();
    let mut notes = vec![format!(
        "Linux boot protocol {}: kernel at {:#x?} (needs {:#x?}), initrd at {}",
        boot.header.version,
        boot.kernel,
        boot.kernel_window,
        boot.initrd
            .as_ref()
            .map_or("(none)".to_string(), |r| format!("{r:#x?}"))
    )];
    if opts.start != boot::StartMode::Protected {
        notes.push("--start is ignored: a Linux kernel starts at its 64-bit entry".to_string());
    }
    Ok(Prepared {
        kind: LINUX_KIND,
        start: "linux64",
        regs: boot.regs,
        sregs: boot.sregs,
        fw_cfg: devices::fw_cfg::FwCfg::new(ram_end, 1, &e820),
        notes,
    })
}

/// Loads the image, writes the Multiboot information, and returns the entry point, the
/// boot information address (0 without Multiboot) and the fw_cfg device.
fn load_guest(
    opts: &Options,
    image: &[u8],
    modules: &[multiboot::Module],
    mem: &mut [u8],
) -> Result<(loader::Loaded, u64, devices::fw_cfg::FwCfg)> {
    let load_opts = loader::LoadOptions {
        format: opts.format,
        load_addr: opts.load_addr,
        entry: opts.entry,
        // The boot structures and the Multiboot memory map and information.
        reserved: boot::BOOT_AREA.start..multiboot::INFO_AREA.end,
    };
    let image_name = opts.image.display().to_string();
    let loaded = loader::load(image, mem, &load_opts)
        .map_err(|e| Error::new(e.kind, format!("{image_name}: {}", e.msg)))?;
    let ram = mem.len() as u64;
    let e820: Vec<_> = [(0, ram, multiboot::E820_RAM)].into();
    let mut fw_cfg = devices::fw_cfg::FwCfg::new(ram, 1, &e820);
    let Some(mb) = &loaded.multiboot else {
        if !modules.is_empty() {
            return Err(Error::usage(format!(
                "--module needs a Multiboot kernel, and {image_name} has no Multiboot header (or --format elf/flat ignores it)"
            )));
        }
        if !opts.append.is_empty() {
            fw_cfg.add_cmdline(&opts.append);
        }
        return Ok((loaded, 0, fw_cfg));
    };
    let info = multiboot::write_boot_info(
        mem,
        mb.extent.clone(),
        &multiboot::BootInputs {
            image_name: &image_name,
            append: &opts.append,
            modules,
        },
    )
    .map_err(|e| Error::new(e.kind, format!("{image_name}: {}", e.msg)))?;
    // Addresses are below 4 GiB: write_boot_info checked them.
    fw_cfg.add_multiboot(devices::fw_cfg::MultibootItems {
        entry: loaded.entry as u32,
        kernel_addr: info.region.start as u32,
        kernel_data: mem[info.region.start as usize..info.region.end as usize].to_vec(),
        info_addr: multiboot::INFO_ADDR as u32,
        info: info.info.to_vec(),
    });
    Ok((loaded, multiboot::INFO_ADDR, fw_cfg))
}

/// Gives the guest the launcher's CPUID table and tells the platform the TSC frequency and
/// address width it announces. A backend without CPUID control keeps its own CPUID.
fn setup_cpu_model(backend: &mut dyn Backend, platform: &mut platform::Platform) -> Result<()> {
    let caps = backend.capabilities();
    let tsc_khz = if caps.tsc {
        Some(backend.tsc_khz()?)
    } else {
        None
    };
    if caps.cpuid {
        let table = cpuid::build(&backend.supported_cpuid()?, tsc_khz, caps.tsc_deadline);
        backend.set_cpuid(&table)?;
        platform.configure(tsc_khz, cpuid::phys_bits(&table));
    } else {
        platform.configure(tsc_khz, 36);
    }
    Ok(())
}

/// Loads, boots and runs the guest, then prints the report; returns the exit status.
fn run_guest(
    opts: &Options,
    files: &GuestFiles,
    backend: &mut dyn Backend,
    serial: Box<dyn Write>,
    input: Option<Receiver<Vec<u8>>>,
) -> Result<u8> {
    run_guest_reporting_to(
        opts,
        files,
        backend,
        serial,
        input,
        &mut io::stdout().lock(),
    )
}

/// `run_guest` with the report written to `report_out`.
fn run_guest_reporting_to(
    opts: &Options,
    files: &GuestFiles,
    backend: &mut dyn Backend,
    serial: Box<dyn Write>,
    input: Option<Receiver<Vec<u8>>>,
    report_out: &mut dyn Write,
) -> Result<u8> {
    let image_name = opts.image.display().to_string();
    let Prepared {
        kind,
        start,
        regs,
        sregs,
        fw_cfg,
        notes,
    } = prepare_guest(opts, files, backend.memory())?;
    if !opts.quiet {
        for note in &notes {
            eprintln!("shadowvm-run: note: {note}");
        }
    }
    let mut devices = devices::Devices::new(serial, opts.quiet);
    // CPUID before the boot state: KVM accepts EFER.LME only with long mode in CPUID.
    setup_cpu_model(backend, &mut devices.platform)?;
    backend.set_state(&regs, &sregs)?;

    devices.set_exit_device(opts.exit_device);
    devices.set_fw_cfg(fw_cfg);
    if kind == LINUX_KIND {
        devices.watch_linux_console();
        // The start of the boot for a Linux benchmark, whose /init marks the end.
        devices.mark_entry(runloop::LINUX_ENTRY_MARK);
    }
    if let Some(rx) = input {
        devices.set_serial_input(rx);
    }
    signals::arm(backend.immediate_exit_ptr(), opts.timeout)
        .map_err(|e| Error::os(format!("cannot install signal handlers: {e}")))?;
    let result = runloop::run(backend, &mut devices, &signals::pending);
    signals::disarm();
    let (outcome, loop_stats) = result?;
    let memory = backend.memory().len() as u64;

    let (backend_stats, stats_error) = match backend.stats() {
        Ok(s) => (s, None),
        Err(e) => (Vec::new(), Some(e.msg)),
    };
    let report = report::Report {
        backend: backend.name(),
        image: &image_name,
        image_kind: kind,
        start,
        memory,
        entry: regs.rip,
        outcome: &outcome,
        loop_stats: &loop_stats,
        io: devices.counts,
        backend_stats: &backend_stats,
        stats_error,
    };
    if let Some(e) = devices.output_error.take() {
        eprintln!("shadowvm-run: warning: serial output was lost: {e}");
    }
    let status = outcome.exit_status();
    let written = if opts.json {
        writeln!(report_out, "{}", report.json())
    } else if opts.quiet {
        if status != 0 {
            eprintln!("shadowvm-run: {}", outcome.describe());
        }
        Ok(())
    } else {
        write!(report_out, "{}", report.table())
    };
    written
        .and_then(|()| report_out.flush())
        .map_err(|e| Error::new(Kind::Output, format!("cannot write the report: {e}")))?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Exit;
    use crate::devices::tests::Capture;
    use crate::runloop::tests::Fake;

    fn files<'a>(
        image: &'a [u8],
        initrd: Option<&'a [u8]>,
        modules: &'a [multiboot::Module],
    ) -> GuestFiles<'a> {
        GuestFiles {
            image,
            initrd,
            modules,
        }
    }

    #[test]
    fn end_to_end_with_fake_backend() {
        let img = loader::tests::elf(false, 0x10_0000, &[(0x10_0000, 0x10_0000, b"\xf4", 1)]);
        let mut fake = Fake {
            mem: vec![0; 4 << 20],
            ..Default::default()
        };
        fake.script = vec![
            Ok(Exit::IoOut {
                port: 0x3f8,
                size: 1,
                values: vec![b'P'.into()],
            }),
            Ok(Exit::IoOut {
                port: 0xf4,
                size: 4,
                values: vec![0],
            }),
        ]
        .into();
        let opts = match args::parse([
            "--quiet".to_string(),
            "g.elf".to_string(),
            "--memory=4M".to_string(),
        ])
        .unwrap()
        {
            Command::Run(o) => *o,
            _ => unreachable!(),
        };
        let cap = Capture::default();
        let status = run_guest(
            &opts,
            &files(&img, None, &[]),
            &mut fake,
            Box::new(cap.clone()),
            None,
        )
        .unwrap();
        assert_eq!(status, 0);
        assert_eq!(&*cap.0.borrow(), b"P");
        assert_eq!(fake.mem[0x10_0000], 0xf4, "image loaded");
        assert_eq!(fake.regs.rip, 0x10_0000);
        assert_eq!(fake.regs.rax, 0x2BAD_B002);
        assert_eq!(fake.regs.rbx, 0, "no Multiboot header, no information");
    }

    #[test]
    fn cpu_model_follows_the_backend() {
        let mut fake = Fake {
            caps: backend::Capabilities {
                cpuid: true,
                tsc: true,
                tsc_deadline: false,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut platform = platform::Platform::new(Box::new(platform::HostClock), true);
        setup_cpu_model(&mut fake, &mut platform).unwrap();
        let leaf = |t: &[backend::CpuidEntry], f: u32| {
            t.iter().find(|e| e.function == f).copied().unwrap()
        };
        assert_eq!(leaf(&fake.cpuid, 1).ecx & cpuid::LEAF1_ECX_TSC_DEADLINE, 0);
        assert_ne!(leaf(&fake.cpuid, 1).edx & cpuid::LEAF1_EDX_APIC, 0);
        // The fake's 1 GHz TSC: leaf 0x16 and the platform's MSR_PLATFORM_INFO agree.
        assert_eq!(leaf(&fake.cpuid, 0x16).eax, 1000);
        assert_eq!(platform.rdmsr(msr::MSR_PLATFORM_INFO), Ok(10 << 8));
        fake.caps.tsc_deadline = true;
        setup_cpu_model(&mut fake, &mut platform).unwrap();
        assert_ne!(leaf(&fake.cpuid, 1).ecx & cpuid::LEAF1_ECX_TSC_DEADLINE, 0);
        // Without CPUID control nothing is set.
        let mut plain = Fake::default();
        setup_cpu_model(&mut plain, &mut platform).unwrap();
        assert!(plain.cpuid.is_empty());
    }

    fn parse_opts(args: &[&str]) -> Options {
        match args::parse(args.iter().map(|s| s.to_string())).unwrap() {
            Command::Run(o) => *o,
            _ => unreachable!(),
        }
    }

    #[test]
    fn multiboot_kernel_gets_info_modules_and_fw_cfg() {
        let mut seg = crate::multiboot::tests::image_with_header(16, 0, 3, None);
        seg.push(0xf4);
        let img = loader::tests::elf(false, 0x10_000c, &[(0x10_0000, 0x10_0000, &seg, 0x2010)]);
        let mut fake = Fake {
            mem: vec![0; 128 << 20],
            ..Default::default()
        };
        let sel = |k: u16| {
            Ok(Exit::IoOut {
                port: 0x510,
                size: 2,
                values: vec![k.into()],
            })
        };
        let read4 = || {
            Ok(Exit::IoIn {
                port: 0x511,
                size: 1,
                count: 4,
            })
        };
        fake.script = vec![
            sel(devices::fw_cfg::key::KERNEL_SIZE),
            read4(),
            sel(devices::fw_cfg::key::INITRD_ADDR),
            read4(),
            Ok(Exit::IoOut {
                port: 0xf4,
                size: 4,
                values: vec![0],
            }),
        ]
        .into();
        let opts = parse_opts(&[
            "--quiet",
            "k.elf",
            "--memory=128M",
            "--append=foo bar",
            "--exit-device=qemu",
        ]);
        let modules = [crate::multiboot::Module {
            string: "mod1 arg1 arg2".into(),
            data: b"hello\n".to_vec(),
        }];
        let status = run_guest(
            &opts,
            &files(&img, None, &modules),
            &mut fake,
            Box::new(Capture::default()),
            None,
        )
        .unwrap();
        assert_eq!(status, 1, "QEMU's status for isa-debug-exit value 0");
        assert_eq!((fake.regs.rax, fake.regs.rbx), (0x2BAD_B002, 0x9500));
        let rd = |a: usize| u32::from_le_bytes(fake.mem[a..a + 4].try_into().unwrap());
        assert_eq!(rd(0x9500), 0x24f);
        assert_eq!(rd(0x9500 + 20), 1, "mods_count");
        let m = rd(0x9500 + 24) as usize;
        assert_eq!((rd(m), rd(m + 4)), (0x10_4000, 0x10_4006));
        assert_eq!(&fake.mem[0x10_4000..0x10_4006], b"hello\n");
        let cmdline = rd(0x9500 + 16) as usize;
        assert_eq!(&fake.mem[cmdline..cmdline + 14], b"k.elf foo bar\0");
        // fw_cfg: KERNEL_SIZE covers kernel, strings and module; INITRD_ADDR is the info.
        let le = |v: &[u64]| v.iter().enumerate().map(|(i, b)| b << (8 * i)).sum::<u64>();
        assert_eq!(le(&fake.io_in[0]), 0x5000);
        assert_eq!(le(&fake.io_in[1]), 0x9500);
    }

    #[test]
    fn modules_need_a_multiboot_kernel() {
        let img = loader::tests::elf(false, 0x10_0000, &[(0x10_0000, 0x10_0000, b"\xf4", 1)]);
        let mut fake = Fake {
            mem: vec![0; 4 << 20],
            ..Default::default()
        };
        let opts = parse_opts(&["--quiet", "g.elf", "--memory=4M"]);
        let modules = [crate::multiboot::Module {
            string: "m".into(),
            data: vec![1],
        }];
        let e = run_guest(
            &opts,
            &files(&img, None, &modules),
            &mut fake,
            Box::new(Capture::default()),
            None,
        )
        .unwrap_err();
        assert_eq!(e.kind, Kind::Usage);
        assert!(
            e.msg.contains("--module needs a Multiboot kernel"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn bad_image_names_the_file() {
        let mut fake = Fake {
            mem: vec![0; 4 << 20],
            ..Default::default()
        };
        let opts = match args::parse(["--quiet".to_string(), "bad.elf".to_string()]).unwrap() {
            Command::Run(o) => *o,
            _ => unreachable!(),
        };
        let e = run_guest(
            &opts,
            &files(b"\x7fELF\x02", None, &[]),
            &mut fake,
            Box::new(Capture::default()),
            None,
        )
        .unwrap_err();
        assert_eq!(e.kind, Kind::Image);
        assert!(
            e.msg.starts_with("bad.elf: ELF file is truncated"),
            "{}",
            e.msg
        );
    }

    /// A bzImage (found by its setup header) gets the Linux boot protocol: kernel, initrd
    /// and command line in memory, the 64-bit entry state, and the platform devices.
    #[test]
    fn bzimage_boots_with_the_linux_protocol() {
        let kernel = linux::tests::Synthetic::default().image();
        let initrd = b"initrd contents".repeat(100);
        let mut fake = Fake {
            mem: vec![0; 64 << 20],
            ..Default::default()
        };
        fake.script = vec![Ok(Exit::IoOut {
            port: 0xf4,
            size: 4,
            values: vec![0],
        })]
        .into();
        let opts = parse_opts(&[
            "--quiet",
            "--kernel",
            "bzImage",
            "--initrd",
            "initrd",
            "--append",
            "console=ttyS0",
            "--exit-device=qemu",
        ]);
        let status = run_guest(
            &opts,
            &files(&kernel, Some(&initrd), &[]),
            &mut fake,
            Box::new(Capture::default()),
            None,
        )
        .unwrap();
        assert_eq!(status, 1);
        // The synthetic kernel prefers 16 MiB: entry 0x200 in, zero page in RSI, long mode.
        assert_eq!(fake.regs.rip, 0x100_0200);
        assert_eq!(fake.regs.rsi, linux::ZERO_PAGE_ADDR);
        assert_eq!(fake.sregs.cs.selector, linux::BOOT_CS);
        assert_ne!(fake.sregs.efer & (1 << 10), 0, "EFER.LMA");
        let zp = linux::ZERO_PAGE_ADDR as usize;
        let rd = |a: usize| u32::from_le_bytes(fake.mem[a..a + 4].try_into().unwrap());
        let (initrd_addr, initrd_size) = (rd(zp + 0x218) as usize, rd(zp + 0x21c) as usize);
        assert_eq!(initrd_size, initrd.len());
        assert_eq!(
            &fake.mem[initrd_addr..initrd_addr + initrd_size],
            &initrd[..]
        );
        let cmdline = rd(zp + 0x228) as usize;
        assert_eq!(&fake.mem[cmdline..cmdline + 14], b"console=ttyS0\0");
        // The kernel's bytes after the setup sectors, at the load address.
        assert_eq!(
            fake.mem[0x100_0000..0x100_0010],
            kernel[8 * 512..8 * 512 + 16]
        );
    }

    /// A Linux kernel's run starts with the entry mark (the start of its boot for the Linux
    /// benchmark), and the guest's own marks follow, each with the guest's TSC.
    #[test]
    fn linux_runs_mark_the_kernel_entry_and_honour_guest_marks() {
        let kernel = linux::tests::Synthetic::default().image();
        let mut fake = Fake {
            mem: vec![0; 64 << 20],
            guest_tsc: 7,
            tsc_per_run: 10,
            ..Default::default()
        };
        let out = |port, values| {
            Ok(Exit::IoOut {
                port,
                size: 4,
                values,
            })
        };
        fake.script = vec![out(0xf8, vec![1]), out(0xf8, vec![2]), out(0xf4, vec![0])].into();
        let opts = parse_opts(&["--json", "--kernel", "bzImage"]);
        let mut report = Vec::new();
        let status = run_guest_reporting_to(
            &opts,
            &files(&kernel, None, &[]),
            &mut fake,
            Box::new(Capture::default()),
            None,
            &mut report,
        )
        .unwrap();
        assert_eq!(status, 0);
        let json = String::from_utf8(report).unwrap();
        let marks: Vec<(&str, &str)> = json
            .split("{\"mark\":")
            .skip(1)
            .map(|m| {
                let value = m.split(',').next().unwrap();
                let tsc = m.split("\"guest_tsc\":").nth(1).unwrap();
                (value, tsc.split(['}', ',']).next().unwrap())
            })
            .collect();
        assert_eq!(marks, vec![("0", "7"), ("1", "17"), ("2", "27")], "{json}");
    }

    #[test]
    fn linux_and_multiboot_files_do_not_mix() {
        let kernel = linux::tests::Synthetic::default().image();
        let elf = loader::tests::elf(false, 0x10_0000, &[(0x10_0000, 0x10_0000, b"\xf4", 1)]);
        let module = [crate::multiboot::Module {
            string: "m".into(),
            data: vec![1],
        }];
        let cases = [
            (
                files(&elf, Some(b"rd"), &[]),
                "--initrd needs a Linux bzImage",
            ),
            (
                files(&kernel, None, &module),
                "is a Linux bzImage: give its initramfs with --initrd",
            ),
        ];
        for (guest, want) in cases {
            let mut fake = Fake {
                mem: vec![0; 64 << 20],
                ..Default::default()
            };
            let opts = parse_opts(&["--quiet", "k"]);
            let e = run_guest(&opts, &guest, &mut fake, Box::new(Capture::default()), None)
                .unwrap_err();
            assert_eq!(e.kind, Kind::Usage);
            assert!(e.msg.contains(want), "{}", e.msg);
        }
    }

    #[test]
    fn bad_bzimage_names_the_file_and_what_to_do() {
        // Too little memory for the kernel's 16 MiB load address and init_size.
        let kernel = linux::tests::Synthetic::default().image();
        let mut fake = Fake {
            mem: vec![0; 16 << 20],
            ..Default::default()
        };
        let opts = parse_opts(&["--quiet", "bzImage", "--memory=16M"]);
        let e = run_guest(
            &opts,
            &files(&kernel, None, &[]),
            &mut fake,
            Box::new(Capture::default()),
            None,
        )
        .unwrap_err();
        assert_eq!(e.kind, Kind::Image);
        assert!(e.msg.starts_with("bzImage: the kernel needs"), "{}", e.msg);
        assert!(e.msg.contains("give the guest at least"), "{}", e.msg);
        // --format linux insists on a setup header.
        let opts = parse_opts(&["--quiet", "--format=linux", "g.elf"]);
        let elf = loader::tests::elf(false, 0x10_0000, &[(0x10_0000, 0x10_0000, b"\xf4", 1)]);
        let e = run_guest(
            &opts,
            &files(&elf, None, &[]),
            &mut fake,
            Box::new(Capture::default()),
            None,
        )
        .unwrap_err();
        assert_eq!(e.kind, Kind::Image);
        assert!(e.msg.starts_with("g.elf: "), "{}", e.msg);
    }
}
