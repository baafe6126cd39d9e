//! EC2 for real, under emulation: Debian's real cloud-init on an arm64 cloud guest (UEFI, EC2
//! SMBIOS, NVMe root) picks the Ec2 datasource, gets the user-data `imager build` rendered from an
//! IMDSv2 server at 169.254.169.254 (token required), and that user-data fetches the static
//! talos-agent from the bastion's registry at 10.20.13.140:5000 by digest, verifies it, and runs
//! `talos-agent boot`, which kexecs (arm64 `kexec_load`) into the stand-in Talos; its
//! `ext-talos-agent` reports `maintenance_ready` to `talos-agent wait` on the bastion.
//!
//! Then the failure path: the bastion's cache serves corrupted bytes; the user-data refuses the
//! agent (sha256 mismatch), nothing is kexec'd, cloud-init finishes and the instance stays a
//! working system (login prompt); powered off and booted again, cloud-init does not run the
//! user-data a second time.
//!
//! Both addresses exist only in a network namespace the test creates and checks has no route out
//! (`moonboot_tests::netns`). Needs root, QEMU, the fixtures and the cached cloud guest
//! (`scripts/cloud-guest`). The two paths boot side by side from one build, each in its own
//! namespace with its own bastion and copy of the guest: about 3–4 minutes under software
//! emulation, the happy path's phases slower than alone since both share the CPUs.

use moonboot_tests::ec2::{self, Options, CLOUD_DONE, KEXEC_LINE, USER_DATA_MARK};
use moonboot_tests::fixtures::{skip, unique_repository, with_qemu, with_registry};

const TEST: &str = "ec2_cloud_init";

fn line<'a>(lines: &'a [String], needle: &str) -> Option<&'a String> {
    lines.iter().find(|l| l.contains(needle))
}

#[test]
fn cloud_init_fetches_the_agent_by_digest_and_kexecs_into_talos_or_refuses_corrupted_bytes() {
    let Some(f) = with_registry(TEST) else { return };
    if with_qemu(TEST, &f, "arm64").is_none() {
        return;
    }
    if !nix_root() {
        skip(TEST, "needs root (network namespaces, mmdebstrap)");
        return;
    }
    let guest = moonboot_tests::cloud_guest::ensure().unwrap_or_else(|e| panic!("{e:#}"));
    let work = std::env::temp_dir().join(format!("moonboot-{TEST}-{}", std::process::id()));
    // Repositories of this run alone: the fixture registry is shared by every test and every run.
    let o = Options {
        work: work.clone(),
        verbose: true,
        nodes: 1,
        boot_repository: unique_repository("moonboot-test/ec2-boot"),
        agent_repository: unique_repository("moonboot-test/ec2-agent"),
        image: Default::default(),
    };

    // The happy path (1) and the corrupting cache (2) boot side by side from one build: each has
    // its own namespace, bastion, metadata service and copy of the guest.
    let built = ec2::build_and_publish(&f, &o).unwrap_or_else(|e| panic!("{e:#}"));
    let (out, refused) = std::thread::scope(|s| {
        let refused = s.spawn(|| ec2::run_refused(&f, &guest, &built, &work.join("refused")));
        let out = ec2::run_built(&f, &guest, &o, built.clone());
        (out, refused.join().expect("the refused run panicked"))
    });
    let out = out.unwrap_or_else(|e| panic!("{e:#}"));
    let refused = refused.unwrap_or_else(|e| panic!("{e:#}"));

    // 1. The happy path.
    let b = &out.built;
    let user_data = std::fs::read_to_string(&b.user_data).unwrap();
    assert!(user_data.starts_with("#cloud-config"), "{user_data}");
    assert!(user_data.len() < 16384, "user-data is {} bytes, over EC2's 16 KB", user_data.len());
    let boot_ref = format!("10.20.13.140:5000/{}@{}", o.boot_repository, b.boot_digest);
    assert!(user_data.contains(&boot_ref), "{boot_ref} not in {user_data}");
    assert!(user_data.contains(b.agent_digest.trim_start_matches("sha256:")), "agent digest in the user-data");
    let schema = std::process::Command::new("cloud-init").args(["schema", "-c"]).arg(&b.user_data).output().unwrap();
    assert!(schema.status.success(), "cloud-init schema -c: {}", String::from_utf8_lossy(&schema.stderr));

    // IMDSv2: a token was taken, the user-data was served with it.
    let reqs = &out.imds_requests;
    assert!(reqs.iter().any(|r| r.starts_with("PUT /latest/api/token") && r.ends_with(" 200")), "{reqs:#?}");
    assert!(reqs.iter().any(|r| r.starts_with("GET ") && r.contains("/user-data") && r.ends_with(" 200")), "{reqs:#?}");
    let ci_log = &out.cloud_init_log;
    assert!(ci_log.contains("DataSourceEc2Local"), "cloud-init.log names no DataSourceEc2Local");

    let node = &out.instances[0];
    let console = &node.console;
    let fetch = line(console, &format!("{USER_DATA_MARK}fetching talos-agent {}", b.agent_digest))
        .unwrap_or_else(|| panic!("no fetch line for {} in the console", b.agent_digest));
    assert!(fetch.contains(&format!("http://10.20.13.140:5000/v2/{}/blobs/", o.agent_repository)), "{fetch}");
    // The user-data's key: the boot artifact's cosign signature verified before any layer.
    let signed = line(console, &format!("cosign signature of {} verified", b.boot_digest))
        .unwrap_or_else(|| panic!("no verified signature of {} in the console", b.boot_digest));
    assert!(signed.contains("verified with key sha256:"), "{signed}");
    assert!(line(console, KEXEC_LINE).is_some(), "the agent never kexec'd");
    let cmdline = line(console, &format!("{} cmdline=", moonboot_tests::demo::STANDIN_MARK))
        .expect("the stand-in init printed its command line");
    for want in [
        "talos.platform=aws",
        "console=ttyAMA0",
        "talos_agent.report=http://10.20.13.140:8090/v1/report",
        "ip=10.0.2.15",
        "standin.hold",
    ] {
        assert!(cmdline.contains(want), "{want} missing from the second kernel's command line: {cmdline}");
    }
    assert_eq!(out.nodes.len(), 1, "{:#?}", out.nodes);
    assert_eq!(out.nodes[0]["phase"], "maintenance_ready", "{}", out.nodes[0]);
    assert!(out.analyze.contains("init-local"), "cloud-init analyze show:\n{}", out.analyze);
    eprintln!("EC2 path, software emulation; seconds from power-on:");
    for (phase, s) in &node.phases {
        eprintln!("  {phase:<28} {s:7.1}");
    }
    eprintln!("cloud-init analyze show (until the kexec):\n{}", out.analyze);

    // 2. A corrupting cache: refused, Ubuntu keeps running, and no retry on the next boot.
    let mismatch = line(&refused.first, "sha256 mismatch").expect("the mismatch is logged");
    assert!(mismatch.contains(b.agent_digest.trim_start_matches("sha256:")), "{mismatch}");
    assert!(line(&refused.first, KEXEC_LINE).is_none(), "kexec after a mismatch");
    assert!(line(&refused.first, "verified, starting").is_none(), "corrupted bytes were run");
    let done = line(&refused.first, CLOUD_DONE).expect("cloud-init finished");
    assert!(done.contains("DataSourceEc2Local"), "{done}");
    assert!(refused.blob_gets.0 >= 1, "the agent blob was fetched at least once");
    assert!(line(&refused.second, CLOUD_DONE).is_some(), "second boot: cloud-init finished");
    assert!(
        line(&refused.second, &format!("{USER_DATA_MARK}fetching")).is_none(),
        "second boot ran the user-data again"
    );
    assert_eq!(refused.blob_gets.1, 0, "second boot fetched blobs");
    let _ = std::fs::remove_dir_all(&work);
}

fn nix_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}
