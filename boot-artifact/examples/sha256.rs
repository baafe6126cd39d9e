//! `sha256 < FILE`: hashes stdin with [`HashingWriter`] (the hashing half of the
//! `VerifyingWriter` talos-agent streams fetched bytes through; the registry crate's blob fetch
//! calls the same `sha2::Sha256`), and prints `<64 hex digits>  <implementation>` (`aarch64-sha2`, `x86-sha`
//! or `soft`: [`sha256_implementation`]).
//!
//! `ci/publish.sh agents` cross-builds it next to the static agent, with the agent's release
//! profile but not stripped (`[profile.release.package.boot-artifact]`), so that
//! `tests/tests/sha256_hardware.rs` can disassemble the SHA-256 code on the fetch path by name.
//! Exit codes: 0 hashed; 1 an I/O error.

use std::io::{self, Write};

use boot_artifact::digest::{sha256_implementation, HashingWriter};

fn main() {
    let mut hashing = HashingWriter::new(io::sink());
    if let Err(e) = io::copy(&mut io::stdin().lock(), &mut hashing) {
        eprintln!("sha256: reading stdin: {e}");
        std::process::exit(1);
    }
    let _ = hashing.flush();
    println!("{}  {}", hashing.digest().hex(), sha256_implementation());
}
