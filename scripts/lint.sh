#!/usr/bin/env bash
# make lint (and the host tier of make check): clippy on the host crates, their tests and
# examples, with the kernel's lint flags (Cargo.toml, [workspace.lints]) and the deny lists
# (rust/mmu/mod.rs, rust/emulate/mod.rs, rust/cpumodel/mod.rs) that make a panicking form an
# error; any warning fails. rustfmt on the host crates and on the kernel crate
# (rust/shadowvm.rs and every module it includes), with the kernel's own rustfmt settings
# (.rustfmt.toml, as the kernel's rustfmtcheck, which an external module cannot run).
# Exit status: 0 clean, 1 a finding, 3 the tools are not installed (cargo clippy, rustfmt).
source "$(dirname "$0")/lib.sh"
cd "$SHADOWVM_TOP"
if ! cargo clippy --version >/dev/null 2>&1 || ! rustfmt --version >/dev/null 2>&1; then
	echo "lint: cargo clippy or rustfmt is not installed (rustup component add clippy rustfmt)"
	exit 3
fi
rc=0
echo "== cargo clippy --workspace --release --all-targets -- -D warnings"
cargo clippy --workspace --release --all-targets -- -D warnings 2>&1 || rc=1
echo "== cargo fmt --all --check"
cargo fmt --all --check 2>&1 || rc=1
echo "== rustfmt --config-path .rustfmt.toml --check rust/shadowvm.rs (the kernel crate)"
rustfmt --config-path .rustfmt.toml --check rust/shadowvm.rs 2>&1 || rc=1
exit $rc
