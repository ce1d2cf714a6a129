#!/usr/bin/env bash
# make lint (and the host tier of make check): clippy on the host crates, whose deny lists
# (rust/mmu/mod.rs, rust/emulate/mod.rs, rust/cpumodel/mod.rs) make a panicking form an
# error; rustfmt on the host crates and on the kernel crate (rust/shadowvm.rs and every
# module it includes, with the kernel's own rustfmt settings: edition 2021, the default 100
# columns).
# Exit status: 0 clean, 1 a finding, 3 the tools are not installed (cargo clippy, rustfmt).
source "$(dirname "$0")/lib.sh"
cd "$SHADOWVM_TOP"
if ! cargo clippy --version >/dev/null 2>&1 || ! rustfmt --version >/dev/null 2>&1; then
	echo "lint: cargo clippy or rustfmt is not installed (rustup component add clippy rustfmt)"
	exit 3
fi
rc=0
echo "== cargo clippy --workspace --release"
cargo clippy --workspace --release 2>&1 || rc=1
echo "== cargo fmt --all --check"
cargo fmt --all --check 2>&1 || rc=1
echo "== rustfmt --edition 2021 --check rust/shadowvm.rs (the kernel crate)"
rustfmt --edition 2021 --check rust/shadowvm.rs 2>&1 || rc=1
exit $rc
