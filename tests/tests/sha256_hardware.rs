//! On arm64 the SHA-256 that verifies every fetched byte runs on the CPU's SHA-2 instructions
//! (ARMv8 Cryptographic Extension: every Graviton has it), proven on the target CPU's terms rather
//! than by a benchmark on this x86-64 machine:
//!
//! 1. the static aarch64 `talos-agent` runs `boot --dry-run --json` against the fixture registry's
//!    stand-in Talos imager image (a real arm64 kernel and initramfs, every byte fetched and
//!    verified) under `qemu-aarch64 -cpu max`, and reports `aarch64-sha2`;
//! 2. the unstripped aarch64 `sha256` example (`boot-artifact/examples/sha256.rs`: the same
//!    `HashingWriter` and `sha2` as the agent, built by `ci/publish.sh agents` with the agent's
//!    profile), disassembled with binutils' `aarch64-linux-gnu-objdump`: sha2's block function
//!    `sha2::sha256::compress256` reaches `sha256h` (in its own body or in
//!    `sha2::sha256::aarch64_sha2::compress`, which it branches to); run under
//!    `qemu-aarch64 -cpu max -d in_asm`, the `sha256h` QEMU translated lie inside those functions
//!    (they ran, on the digest path), and it prints the input's sha256 as `sha256sum` does.
//!
//! Needs the fixtures, `qemu-aarch64-static`, binutils-aarch64-linux-gnu and the cross toolchain
//! (scripts/setup); skipped with the reason otherwise (`MOONBOOT_REQUIRE_FIXTURES=1`: failed).

use std::path::{Path, PathBuf};
use std::process::Command;

use moonboot_tests::fixtures::{fixtures_dir, skip, with_registry};
use moonboot_tests::qemu::have;

const QEMU: &str = "qemu-aarch64-static";
const OBJDUMP: &str = "aarch64-linux-gnu-objdump";

fn tools(test: &str) -> bool {
    for tool in [QEMU, OBJDUMP] {
        if !have(tool) {
            skip(test, &format!("{tool} is not installed (run scripts/setup)"));
            return false;
        }
    }
    true
}

fn scratch(name: &str) -> PathBuf {
    let d = fixtures_dir().join("tmp").join(format!("sha256-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The addresses of the instructions QEMU's disassembler printed as `mnemonic` for the blocks it
/// translated (`-d in_asm`: lines `0xADDR:  WORD  MNEMONIC OPERANDS`), and the first address (the
/// entry point, where QEMU starts translating).
fn translated(log: &Path, mnemonic: &str) -> (Vec<u64>, u64) {
    let text = std::fs::read_to_string(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let addr = |l: &str| u64::from_str_radix(l.split(':').next().unwrap().trim_start_matches("0x"), 16).unwrap();
    let mut lines = text.lines().filter(|l| l.starts_with("0x"));
    let first = addr(lines.next().expect("QEMU translated something"));
    let hits = lines.filter(|l| l.split_whitespace().nth(2) == Some(mnemonic)).map(addr).collect();
    (hits, first)
}

#[test]
fn the_static_arm64_agent_reports_the_sha2_instructions_under_qemu_cpu_max() {
    let test = "sha256_hardware_agent";
    let Some(f) = with_registry(test) else { return };
    if !tools(test) {
        return;
    }
    let agent = moonboot_tests::stage1::build_static_agent("arm64").unwrap_or_else(|e| panic!("{e:#}"));
    let reference = format!("ghcr.io/{}:{}", moonboot_tests::build::IMAGER_REPOSITORY, f.talos_version);
    let out = Command::new(QEMU)
        .args(["-cpu", "max"])
        .arg(&agent)
        .args(["boot", &reference, "--registry-mirror", &f.mirror, "--insecure-registry", &f.registry])
        .args(["--arch", "arm64", "--platform", "metal", "--no-network-carry-over", "--dry-run", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(plan["sha256_implementation"], "aarch64-sha2", "{plan}");
    let fetched: u64 = plan["bytes_transferred"].as_u64().unwrap();
    assert!(fetched > 1 << 20, "a real kernel and initramfs were fetched: {plan}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("verified (SHA-256: aarch64-sha2)"), "{stderr}");
}

/// A function of `objdump -d -C --no-show-raw-insn` output: its demangled name, its
/// instructions' addresses and mnemonics.
struct Function {
    name: String,
    insns: Vec<(u64, String, String)>,
}

impl Function {
    fn has(&self, mnemonic: &str) -> bool {
        self.insns.iter().any(|(_, m, _)| m == mnemonic)
    }

    fn contains(&self, addr: u64) -> bool {
        matches!((self.insns.first(), self.insns.last()), (Some(a), Some(b)) if (a.0..=b.0).contains(&addr))
    }
}

fn functions(disassembly: &str) -> Vec<Function> {
    let mut out: Vec<Function> = Vec::new();
    for line in disassembly.lines() {
        // `0000000000412340 <sha2::sha256::compress256>:`, then `  412344:\tsha256h\tq0, q1, v2.4s`
        if let Some(name) = line.strip_suffix(">:").and_then(|l| l.split_once(" <")).map(|(_, n)| n.to_string()) {
            out.push(Function { name, insns: Vec::new() });
        } else if let (Some(f), Some((addr, rest))) = (out.last_mut(), line.split_once(":\t")) {
            if let Ok(addr) = u64::from_str_radix(addr.trim(), 16) {
                let mut parts = rest.splitn(2, '\t');
                let mnemonic = parts.next().unwrap_or("").trim().to_string();
                f.insns.push((addr, mnemonic, parts.next().unwrap_or("").to_string()));
            }
        }
    }
    out
}

/// The ELF entry point (`e_entry`, bytes 24..32 of a 64-bit little-endian header).
fn entry_point(elf: &Path) -> u64 {
    let bytes = std::fs::read(elf).unwrap();
    u64::from_le_bytes(bytes[24..32].try_into().unwrap())
}

#[test]
fn sha2s_block_function_in_an_unstripped_arm64_build_uses_sha256h() {
    let test = "sha256_hardware_disassembly";
    if !tools(test) {
        return;
    }
    // Built by `ci/publish.sh agents` (scripts/test) next to the agent, or here.
    let agent = moonboot_tests::stage1::build_static_agent("arm64").unwrap_or_else(|e| panic!("{e:#}"));
    let example = agent.parent().unwrap().join("examples/sha256");
    if !example.is_file() && !moonboot_tests::stage1::prebuilt() {
        let root = moonboot_tests::stage1::workspace();
        let st = Command::new(root.join("ci/publish.sh")).arg("agents").env("ARCHES", "arm64").status().unwrap();
        assert!(st.success(), "ci/publish.sh agents failed");
    }
    assert!(example.is_file(), "{} is missing: ci/publish.sh agents builds it", example.display());
    let dis = Command::new(OBJDUMP).args(["-d", "-C", "--no-show-raw-insn"]).arg(&example).output().unwrap();
    assert!(dis.status.success(), "{}", String::from_utf8_lossy(&dis.stderr));
    let funcs = functions(&String::from_utf8_lossy(&dis.stdout));
    let find = |name: &str| funcs.iter().find(|f| f.name.starts_with(name));
    let compress256 = find("sha2::sha256::compress256")
        .unwrap_or_else(|| panic!("no sha2::sha256::compress256 in {} (stripped?)", example.display()));
    let mut hashing = vec![compress256];
    if !compress256.has("sha256h") {
        let hw = find("sha2::sha256::aarch64_sha2::compress")
            .filter(|f| f.has("sha256h"))
            .expect("sha256h is neither in compress256 nor in a separate aarch64_sha2::compress");
        assert!(
            compress256.insns.iter().any(|(_, _, ops)| ops.contains("<sha2::sha256::aarch64_sha2::compress")),
            "compress256 does not branch to aarch64_sha2::compress"
        );
        hashing.push(hw);
    }

    // Run it on the emulated CPU: it hashes as sha256sum does, says aarch64-sha2, and every sha256h
    // QEMU translated lies inside sha2's block functions.
    let dir = scratch("example");
    let input = dir.join("input");
    let data: Vec<u8> = (0..3_000_017u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&input, &data).unwrap();
    let log = dir.join("in_asm.log");
    let out = Command::new(QEMU)
        .args(["-cpu", "max", "-d", "in_asm", "-D"])
        .arg(&log)
        .arg(&example)
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = Command::new("sha256sum").arg(&input).output().unwrap();
    let want = String::from_utf8_lossy(&want.stdout).split_whitespace().next().unwrap().to_string();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{want}  aarch64-sha2"));
    let (ran, first) = translated(&log, "sha256h");
    // A static-pie is loaded at a base of QEMU's choosing: the entry point gives the offset.
    let base = first.wrapping_sub(entry_point(&example));
    assert!(!ran.is_empty(), "no sha256h was translated: the hardware path never ran");
    for addr in &ran {
        let at = addr.wrapping_sub(base);
        assert!(hashing.iter().any(|f| f.contains(at)), "sha256h at {at:#x} is outside sha2's block functions");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
