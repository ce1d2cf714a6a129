// SPDX-License-Identifier: GPL-2.0

//! `shadowvm-run`: loads a guest image, runs it on `/dev/shadowvm` or `/dev/kvm` with a serial
//! port and an exit port, and reports VM exit and MMU statistics. See `--help` and
//! Documentation/uapi.md.

mod apic;
mod args;
mod backend;
mod boot;
mod cpuid;
mod devices;
mod error;
mod loader;
mod msr;
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
        BackendKind::Shadowvm => Box::new(backend::shadowvm::ShadowVm::open(opts.memory)?),
        BackendKind::Kvm => Box::new(backend::kvm::KvmBackend::open(opts.memory)?),
    };
    run_guest(&opts, &image, backend.as_mut(), serial)
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
        let table = cpuid::build(&backend.supported_cpuid()?, tsc_khz);
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
    image: &[u8],
    backend: &mut dyn Backend,
    serial: Box<dyn Write>,
) -> Result<u8> {
    let load_opts = loader::LoadOptions {
        format: opts.format,
        load_addr: opts.load_addr,
        entry: opts.entry,
        reserved: boot::BOOT_AREA,
    };
    let image_name = opts.image.display().to_string();
    let loaded = loader::load(image, backend.memory(), &load_opts)
        .map_err(|e| Error::new(e.kind, format!("{image_name}: {}", e.msg)))?;
    let (regs, sregs) = boot::setup(backend.memory(), opts.start, loaded.entry)?;
    let mut devices = devices::Devices::new(serial, opts.quiet);
    // CPUID before the boot state: KVM accepts EFER.LME only with long mode in CPUID.
    setup_cpu_model(backend, &mut devices.platform)?;
    backend.set_state(&regs, &sregs)?;

    signals::arm(backend.immediate_exit_ptr(), opts.timeout)
        .map_err(|e| Error::os(format!("cannot install signal handlers: {e}")))?;
    let result = runloop::run(backend, &mut devices, &signals::pending);
    signals::disarm();
    let (outcome, loop_stats) = result?;

    let (backend_stats, stats_error) = match backend.stats() {
        Ok(s) => (s, None),
        Err(e) => (Vec::new(), Some(e.msg)),
    };
    let report = report::Report {
        backend: backend.name(),
        image: &image_name,
        image_kind: loaded.kind,
        start: opts.start.name(),
        memory: opts.memory,
        entry: loaded.entry,
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
    let mut stdout = io::stdout().lock();
    let written = if opts.json {
        writeln!(stdout, "{}", report.json())
    } else if opts.quiet {
        if status != 0 {
            eprintln!("shadowvm-run: {}", outcome.describe());
        }
        Ok(())
    } else {
        write!(stdout, "{}", report.table())
    };
    written
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::new(Kind::Output, format!("cannot write the report: {e}")))?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Exit;
    use crate::devices::tests::Capture;
    use crate::runloop::tests::Fake;

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
        let status = run_guest(&opts, &img, &mut fake, Box::new(cap.clone())).unwrap();
        assert_eq!(status, 0);
        assert_eq!(&*cap.0.borrow(), b"P");
        assert_eq!(fake.mem[0x10_0000], 0xf4, "image loaded");
        assert_eq!(fake.regs.rip, 0x10_0000);
        assert_eq!(fake.regs.rax, 0x2BAD_B002);
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
            b"\x7fELF\x02",
            &mut fake,
            Box::new(Capture::default()),
        )
        .unwrap_err();
        assert_eq!(e.kind, Kind::Image);
        assert!(
            e.msg.starts_with("bad.elf: ELF file is truncated"),
            "{}",
            e.msg
        );
    }
}
