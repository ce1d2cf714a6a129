// SPDX-License-Identifier: GPL-2.0

//! Command-line parsing, hand-written to keep the static binary small.

use crate::boot::StartMode;
use crate::devices::ExitDevice;
use crate::error::{Error, Result};
use crate::loader::Format;
use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
Usage: shadowvm-run [OPTIONS] IMAGE
       shadowvm-run [OPTIONS] --kernel bzImage [--initrd FILE] [--append STRING]

Runs a guest image (Linux bzImage, Multiboot kernel, ELF32/ELF64 or flat binary) on
/dev/shadowvm or /dev/kvm, like qemu-system-x86_64 -kernel IMAGE -serial stdio, then prints
VM exit and MMU statistics. Devices: COM1 16550A UART at 0x3f8 (IRQ 4; output to the terminal, input from
stdin), an exit port at 0xf4, the i8042 reset line (0x64), QEMU's fw_cfg (0x510/0x511) and
a 64 KiB MMIO test window at 0xff000000 (QEMU's pc-testdev iomem).

Options:
  --backend shadowvm|kvm   hypervisor to use (default shadowvm)
  --start protected|long   32-bit protected mode, paging off (default), or 64-bit long
                           mode on identity page tables for the first 4 GiB
  --kernel FILE            the guest image (the same as IMAGE; QEMU's -kernel)
  --format auto|linux|multiboot|elf|flat
                           image format (default auto: Multiboot if the image has a
                           Multiboot header, else Linux if it has a bzImage setup header,
                           else ELF if it has the ELF magic, else flat; elf and flat
                           ignore a Multiboot header and pass EBX = 0)
  --initrd FILE            initial ramdisk of a Linux kernel (QEMU's -initrd)
  --append STRING          kernel command line: a Linux kernel's, or a Multiboot kernel's
                           after the image name (QEMU's -append)
  --module FILE[,ARGS]     load FILE as a Multiboot module with the string \"FILE ARGS\";
                           repeatable, in order (QEMU's -initrd \"FILE ARGS,...\")
  --exit-device shadowvm|qemu
                           shadowvm (default): a write of v to port 0xf4 exits with
                           status v; qemu: isa-debug-exit,iobase=0xf4,iosize=4, a write
                           of v exits with (v << 1) | 1 and a reset exits with 0, as QEMU
                           with -no-reboot
  --load-addr ADDR         load address of a flat image (default 0x100000)
  --entry ADDR             entry point (default: ELF header, or the flat load address)
  --memory SIZE            guest memory, K/M/G suffix allowed (default 64M; 128M for a
                           Linux kernel)
  --timeout SECONDS        stop the guest after this long (fractions allowed)
  --prefault               KVM backend: allocate and lock all guest memory before the
                           guest starts, as shadowvm always does (make bench uses it so
                           that neither backend pays host page allocation in a timed
                           loop); without it KVM's memory is faulted in lazily, as QEMU's
  --json                   print the statistics as JSON on stdout; serial output then
                           goes to stderr unless --serial-log is given
  --serial-log FILE        write serial output to FILE instead of the terminal
  --quiet                  no statistics table and no launcher notes
  -h, --help               show this help
  -V, --version            show the version

Exit status: the guest's exit-port status 0-127 (0 = pass; 128 for larger ones; with
--exit-device qemu, (v << 1) | 1 modulo 256), 160-165 for launcher errors, 170-180 for
guests that ended another way: 170 halted, 171 triple fault, 172 VM-entry failure,
173 internal error, 174 unhandled MMIO, 175 timeout, 176 interrupted, 177 unhandled
exit, 178 guest reset or reboot (i8042 0xFE; 0 with --exit-device qemu), and for a Linux
kernel, told apart by what it printed on COM1 just before: 179 kernel panic (whatever
the machine did next; also with --exit-device qemu), 180 power off or halt (Linux
without ACPI halts with interrupts off) (see Documentation/uapi.md).
";

/// A `--module FILE[,ARGS]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleArg {
    pub path: PathBuf,
    /// The module's Multiboot string: the path as given, then a space and ARGS if given.
    pub string: String,
}

/// Which hypervisor runs the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Shadowvm,
    Kvm,
}

/// Everything the command line selects.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub image: PathBuf,
    pub backend: BackendKind,
    pub start: StartMode,
    pub format: Format,
    pub load_addr: u64,
    pub entry: Option<u64>,
    /// `--memory`; `None`: the default for the kind of image (`default_memory`).
    pub memory: Option<u64>,
    pub timeout: Option<Duration>,
    pub json: bool,
    /// `--prefault`: the KVM backend's guest memory allocated and locked up front.
    pub prefault: bool,
    pub serial_log: Option<PathBuf>,
    pub quiet: bool,
    pub append: String,
    pub initrd: Option<PathBuf>,
    pub modules: Vec<ModuleArg>,
    pub exit_device: ExitDevice,
}

/// Default guest memory: 64 MiB, above the 32 MiB the boot protocol promises.
pub const DEFAULT_MEMORY: u64 = 64 << 20;
/// Default guest memory of a Linux kernel: it loads at 16 MiB and needs room for its
/// initramfs, unpacked, and its processes. The project's guest (samples/linux) passes all
/// its tests in 128 MiB, QEMU's default too, and that fits in the 512 MiB Bochs machine
/// the launcher is tested in.
pub const DEFAULT_LINUX_MEMORY: u64 = 128 << 20;
/// Default load address of flat images: 1 MiB, as for multiboot kernels.
pub const DEFAULT_LOAD_ADDR: u64 = 0x10_0000;
/// Smallest guest memory the launcher accepts: the boot structures plus a 1 MiB image base.
pub const MIN_MEMORY: u64 = 2 << 20;
/// Largest `--memory`: guest RAM is one range from 0, which the launcher's boot page tables
/// (identity map of the first 4 GiB) cover.
pub const MAX_MEMORY: u64 = 4 << 30;

#[derive(Debug, PartialEq)]
pub enum Command {
    Run(Box<Options>),
    Help,
    Version,
}

/// Parses the arguments after the program name.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command> {
    let mut image = None;
    let mut o = Options {
        image: PathBuf::new(),
        backend: BackendKind::Shadowvm,
        start: StartMode::Protected,
        format: Format::Auto,
        load_addr: DEFAULT_LOAD_ADDR,
        entry: None,
        memory: None,
        timeout: None,
        json: false,
        prefault: false,
        serial_log: None,
        quiet: false,
        append: String::new(),
        initrd: None,
        modules: Vec::new(),
        exit_device: ExitDevice::Shadowvm,
    };
    let mut args = args.into_iter();
    let mut only_positional = false;
    let mut set_image = |path: &str| -> Result<()> {
        if image.replace(PathBuf::from(path)).is_some() {
            return Err(Error::usage(format!(
                "more than one guest image given ({path}); pass exactly one IMAGE or --kernel FILE"
            )));
        }
        Ok(())
    };
    while let Some(arg) = args.next() {
        if only_positional || !arg.starts_with('-') || arg == "-" {
            set_image(&arg)?;
            continue;
        }
        if arg == "--" {
            only_positional = true;
            continue;
        }
        // `--name=value` or `--name value`.
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String> {
            match inline.clone().or_else(|| args.next()) {
                Some(v) => Ok(v),
                None => Err(Error::usage(format!("{name} needs a value: {name} {what}"))),
            }
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--backend" => {
                o.backend = match value("shadowvm|kvm")?.as_str() {
                    "shadowvm" => BackendKind::Shadowvm,
                    "kvm" => BackendKind::Kvm,
                    v => {
                        return Err(Error::usage(format!(
                            "unknown backend '{v}': use shadowvm or kvm"
                        )))
                    }
                }
            }
            "--start" => {
                o.start = match value("protected|long")?.as_str() {
                    "protected" => StartMode::Protected,
                    "long" => StartMode::Long,
                    v => {
                        return Err(Error::usage(format!(
                            "unknown start mode '{v}': use protected or long"
                        )))
                    }
                }
            }
            "--format" => {
                o.format = match value("auto|linux|multiboot|elf|flat")?.as_str() {
                    "auto" => Format::Auto,
                    "linux" => Format::Linux,
                    "multiboot" => Format::Multiboot,
                    "elf" => Format::Elf,
                    "flat" => Format::Flat,
                    v => {
                        return Err(Error::usage(format!(
                            "unknown format '{v}': use auto, linux, multiboot, elf or flat"
                        )))
                    }
                }
            }
            "--append" => o.append = value("STRING")?,
            "--kernel" => set_image(&value("FILE")?)?,
            "--initrd" => o.initrd = Some(PathBuf::from(value("FILE")?)),
            "--module" => o.modules.push(parse_module(&value("FILE[,ARGS]")?)?),
            "--exit-device" => {
                o.exit_device = match value("shadowvm|qemu")?.as_str() {
                    "shadowvm" => ExitDevice::Shadowvm,
                    "qemu" => ExitDevice::Qemu,
                    v => {
                        return Err(Error::usage(format!(
                            "unknown exit device '{v}': use shadowvm or qemu"
                        )))
                    }
                }
            }
            "--load-addr" => o.load_addr = parse_u64("--load-addr", &value("ADDR")?)?,
            "--entry" => o.entry = Some(parse_u64("--entry", &value("ADDR")?)?),
            "--memory" => o.memory = Some(parse_size(&value("SIZE")?)?),
            "--timeout" => o.timeout = Some(parse_timeout(&value("SECONDS")?)?),
            "--serial-log" => o.serial_log = Some(PathBuf::from(value("FILE")?)),
            "--json" | "--quiet" | "--prefault" if inline.is_some() => {
                return Err(Error::usage(format!("{name} takes no value")));
            }
            "--json" => o.json = true,
            "--quiet" => o.quiet = true,
            "--prefault" => o.prefault = true,
            _ => return Err(Error::usage(format!("unknown option '{arg}'; see --help"))),
        }
    }
    o.image = image
        .ok_or_else(|| Error::usage("no guest image given; usage: shadowvm-run [OPTIONS] IMAGE"))?;
    validate(&o)?;
    Ok(Command::Run(Box::new(o)))
}

impl Options {
    /// Guest memory: `--memory`, or the default for a Linux kernel or another image.
    pub fn memory_for(&self, linux: bool) -> u64 {
        self.memory.unwrap_or(if linux {
            DEFAULT_LINUX_MEMORY
        } else {
            DEFAULT_MEMORY
        })
    }
}

fn validate(o: &Options) -> Result<()> {
    if let Some(memory) = o.memory {
        if !(MIN_MEMORY..=MAX_MEMORY).contains(&memory) {
            return Err(Error::usage(format!(
                "--memory {memory} is out of range: use 2M to 4G"
            )));
        }
        // Guest RAM is one block from 0; it must leave the APIC page unbacked so accesses exit.
        if memory > crate::apic::APIC_DEFAULT_BASE {
            return Err(Error::usage(format!(
                "--memory {memory} would cover the local APIC page at {:#x}: use at most {}M",
                crate::apic::APIC_DEFAULT_BASE,
                crate::apic::APIC_DEFAULT_BASE >> 20
            )));
        }
        if !memory.is_multiple_of(shadowvm_uapi::SHADOWVM_PAGE_SIZE) {
            return Err(Error::usage(format!(
                "--memory {memory} is not a multiple of 4 KiB: round it (e.g. 64M)"
            )));
        }
    }
    let memory = o.memory_for(false);
    if o.load_addr >= memory {
        return Err(Error::usage(format!(
            "--load-addr {:#x} is outside guest memory ({memory:#x} bytes): lower it or raise --memory",
            o.load_addr
        )));
    }
    if o.initrd.is_some() && matches!(o.format, Format::Multiboot | Format::Elf | Format::Flat) {
        return Err(Error::usage(
            "--initrd is for a Linux kernel; give a Multiboot kernel's files with --module",
        ));
    }
    if o.format == Format::Elf && o.load_addr != DEFAULT_LOAD_ADDR {
        return Err(Error::usage(
            "--load-addr applies to flat images only; ELF segments load at their p_paddr",
        ));
    }
    Ok(())
}

/// `FILE[,ARGS]`: the string is "FILE ARGS" (QEMU's form for `-initrd "FILE ARGS"`).
fn parse_module(v: &str) -> Result<ModuleArg> {
    let (path, args) = match v.split_once(',') {
        Some((p, a)) => (p, Some(a)),
        None => (v, None),
    };
    if path.is_empty() {
        return Err(Error::usage(format!(
            "--module '{v}' has no file name: use --module FILE[,ARGS]"
        )));
    }
    Ok(ModuleArg {
        path: PathBuf::from(path),
        string: match args {
            Some(a) => format!("{path} {a}"),
            None => path.to_string(),
        },
    })
}

/// Decimal or 0x-prefixed hexadecimal number (underscores allowed).
pub fn parse_u64(opt: &str, s: &str) -> Result<u64> {
    let t = s.replace('_', "");
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse(),
    };
    r.map_err(|_| {
        Error::usage(format!(
            "{opt} '{s}' is not a number: use decimal or 0x hex"
        ))
    })
}

/// Size with optional K/M/G suffix (binary units, optional trailing B or iB).
pub fn parse_size(s: &str) -> Result<u64> {
    let err = || {
        Error::usage(format!(
            "--memory '{s}' is not a size: use e.g. 64M, 1G or 0x4000000"
        ))
    };
    let upper = s.trim().to_ascii_uppercase();
    let t = upper.trim_end_matches("IB").trim_end_matches('B');
    let (digits, shift) = match t.chars().last() {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    if digits.is_empty() {
        return Err(err());
    }
    let n = parse_u64("--memory", &digits.to_ascii_lowercase()).map_err(|_| err())?;
    n.checked_mul(1 << shift).ok_or_else(err)
}

fn parse_timeout(s: &str) -> Result<Duration> {
    let secs: f64 = s
        .parse()
        .map_err(|_| Error::usage(format!("--timeout '{s}' is not a number of seconds")))?;
    if !(secs > 0.0 && secs <= 1e6) {
        return Err(Error::usage(format!(
            "--timeout '{s}' must be between 0 and 1000000 seconds"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Options> {
        match parse(args.iter().map(|s| s.to_string()))? {
            Command::Run(o) => Ok(*o),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let o = run(&["guest.elf"]).unwrap();
        assert_eq!(o.image, PathBuf::from("guest.elf"));
        assert_eq!(o.backend, BackendKind::Shadowvm);
        assert_eq!(o.start, StartMode::Protected);
        assert_eq!(o.memory, None);
        assert_eq!(o.memory_for(false), 64 << 20);
        assert_eq!(o.memory_for(true), 128 << 20);
        assert_eq!(o.load_addr, 0x10_0000);
        assert_eq!(o.entry, None);
        assert!(!o.json && !o.quiet && o.timeout.is_none());
        assert_eq!(o.exit_device, ExitDevice::Shadowvm);
        assert!(o.append.is_empty() && o.modules.is_empty() && o.initrd.is_none());
    }

    #[test]
    fn linux_options() {
        let o = run(&[
            "--kernel",
            "bzImage",
            "--initrd=initrd.cpio",
            "--append",
            "console=ttyS0 pti=on",
        ])
        .unwrap();
        assert_eq!(o.image, PathBuf::from("bzImage"));
        assert_eq!(o.initrd, Some(PathBuf::from("initrd.cpio")));
        assert_eq!(o.append, "console=ttyS0 pti=on");
        assert_eq!(o.format, Format::Auto);
        let o = run(&["--format", "linux", "--memory", "256M", "bzImage"]).unwrap();
        assert_eq!(o.format, Format::Linux);
        assert_eq!(o.memory_for(true), 256 << 20, "--memory wins");
    }

    #[test]
    fn multiboot_options() {
        let o = run(&[
            "--format=multiboot",
            "--append",
            "foo bar",
            "--module",
            "mod1,arg1 arg2",
            "--module=mod2",
            "--module",
            "m3,",
            "--exit-device",
            "qemu",
            "k.elf",
        ])
        .unwrap();
        assert_eq!(o.format, Format::Multiboot);
        assert_eq!(o.append, "foo bar");
        let strings: Vec<_> = o.modules.iter().map(|m| m.string.as_str()).collect();
        assert_eq!(strings, ["mod1 arg1 arg2", "mod2", "m3 "]);
        assert_eq!(o.modules[0].path, PathBuf::from("mod1"));
        assert_eq!(o.exit_device, ExitDevice::Qemu);
    }

    #[test]
    fn all_options() {
        let o = run(&[
            "--backend=kvm",
            "--start",
            "long",
            "--format",
            "flat",
            "--load-addr",
            "0x200000",
            "--entry=0x200010",
            "--memory",
            "128M",
            "--timeout",
            "2.5",
            "--json",
            "--quiet",
            "--serial-log",
            "/tmp/s.log",
            "img.bin",
        ])
        .unwrap();
        assert_eq!(o.backend, BackendKind::Kvm);
        assert_eq!(o.start, StartMode::Long);
        assert_eq!(o.format, Format::Flat);
        assert_eq!(o.load_addr, 0x20_0000);
        assert_eq!(o.entry, Some(0x20_0010));
        assert_eq!(o.memory, Some(128 << 20));
        assert_eq!(o.timeout, Some(Duration::from_millis(2500)));
        assert!(o.json && o.quiet);
        assert_eq!(o.serial_log, Some(PathBuf::from("/tmp/s.log")));
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(["--help".to_string()]), Ok(Command::Help));
        assert_eq!(parse(["-V".to_string()]), Ok(Command::Version));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("0x4000000").unwrap(), 64 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("M").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn errors_are_usage_errors_with_a_hint() {
        for bad in [
            &["--backend", "xen", "g"][..],
            &["--start", "real", "g"],
            &["--memory", "1M", "g"],
            &["--memory", "8G", "g"],
            &["--memory", "4097", "g"],
            &["--timeout", "-1", "g"],
            &["--timeout", "soon", "g"],
            &["--entry", "0xzz", "g"],
            &["--load-addr", "0x8000000", "g"],
            &["--format", "elf", "--load-addr", "0x200000", "g"],
            &["--bogus", "g"],
            &["--exit-device", "isa", "g"],
            &["--module", ",args", "g"],
            &["--format", "aout", "g"],
            &["--json=1", "g"],
            &["a", "b"],
            &["--kernel", "a", "b"],
            &["--initrd", "i", "--format", "multiboot", "k"],
            &["--kernel"],
            &[],
            &["g", "--memory"],
        ] {
            let e = run(bad).expect_err(&format!("{bad:?} must fail"));
            assert_eq!(e.kind, crate::error::Kind::Usage, "{bad:?}");
            assert!(!e.msg.contains('\n'), "one line: {}", e.msg);
        }
    }

    #[test]
    fn double_dash_allows_dash_images() {
        assert_eq!(
            run(&["--", "-weird"]).unwrap().image,
            PathBuf::from("-weird")
        );
    }
}
