//! EC2 user-data that turns a stock Ubuntu 22.04 instance into a Talos node: a `#cloud-config`
//! rendered from the template `cloud-init/user-data-ec2.yaml` (compiled in, [`TEMPLATE`]), by
//! `imager build --boot-repository …` (into `<output>/cloud-init/`) and `imager cloud-init`.
//!
//! The rendered user-data writes the POSIX sh script [`SCRIPT_PATH`] and runs it from `runcmd` as
//! `cloud-init-per instance moonboot-talos-boot …`. The script fetches the static `talos-agent`
//! blob by digest with `curl` from each of [`UserData::agent_urls`] in turn (registry mirrors
//! first, then the origin, as [`Reference::endpoints`] orders them; an anonymous Bearer token
//! when a registry asks for one) into a private tmpfs mounted under `/run` (which Ubuntu mounts
//! noexec), runs it only when `sha256sum` matches, and runs
//! `talos-agent boot REPO@<manifest digest> …` ([`UserData::boot_args`]), which kexecs into
//! Talos. Every line it logs starts with `moonboot: `.
//!
//! Sources:
//! - cloud-init documentation (docs.cloud-init.io): the `runcmd` module runs in cloud-final, once
//!   per instance; `bootcmd` runs before the network is guaranteed (canonical/cloud-init#5772);
//!   `cloud-init-per` (writes its marker after the command returns, whatever its exit code);
//!   `write_files`; `output` (`| tee -a /var/log/cloud-init-output.log`); gzip'd user-data is
//!   decompressed ("User-data formats": compressed content);
//! - AWS EC2 User Guide, "Run commands when you launch an EC2 instance with user data input"
//!   (`instancedata-add-user-data`): user data is limited to 16 KB in raw form, before base64
//!   ([`MAX_USER_DATA`]).
//!
//! Values are inserted as single-quoted shell words; a value holding `'`, a newline or a control
//! character is refused with a one-line error naming its flag. The renderer refuses a template
//! placeholder it has no value for and a value no placeholder asks for.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use boot_artifact::digest::Sha256Digest;
use boot_artifact::reference::{Mirror, Reference};
use kernel_cmdline::preset::Arch;

use crate::cli::cloud_init::{Args, UserDataFlags};

/// The template, `cloud-init/user-data-ec2.yaml` at the top of the repository.
pub const TEMPLATE: &str = include_str!("../../cloud-init/user-data-ec2.yaml");
/// EC2's limit on user-data: 16 KB raw, before base64 (AWS `instancedata-add-user-data`).
pub const MAX_USER_DATA: usize = 16384;
/// Where the user-data writes the boot script on the instance.
pub const SCRIPT_PATH: &str = "/usr/local/sbin/moonboot-talos-boot";
/// The `cloud-init-per` name of the boot (its marker, dashes turned into underscores:
/// `/var/lib/cloud/instance/sem/bootper.moonboot_talos_boot.instance`).
pub const PER_INSTANCE_NAME: &str = "moonboot-talos-boot";
/// The subdirectory of a build output that holds rendered user-data.
pub const OUTPUT_DIR: &str = "cloud-init";

/// The file name of the user-data for `arch`: `user-data-ec2-<arch>.yaml` (`.yaml.gz` gzip'd).
pub fn file_name(arch: Arch, gzip: bool) -> String {
    format!("user-data-ec2-{}.yaml{}", arch.as_str(), if gzip { ".gz" } else { "" })
}

/// What the instance uses, from the "EC2 user-data" flags ([`UserDataFlags`]), parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Where the boot artifact is published (no tag, no digest).
    pub boot_repository: Reference,
    /// Where the talos-agent binary artifact is published (no tag, no digest).
    pub agent_repository: Reference,
    /// Registry mirrors on the instance, in order.
    pub mirrors: Vec<Mirror>,
    /// Registries the instance reaches over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Readiness collector URL.
    pub report: Option<String>,
    /// Readiness token.
    pub report_token: Option<String>,
    /// `talos.config=` URL.
    pub talos_config: Option<String>,
    /// Extra kernel arguments for Talos.
    pub extra_kernel_args: Vec<String>,
    /// The boot artifact's signing key, as base64 DER SubjectPublicKeyInfo
    /// (`--instance-signature-key`).
    pub signature_key: Option<String>,
}

/// Parses a `REGISTRY/REPO[:TAG]` flag into a repository reference (the tag dropped).
fn repository(flag: &str, value: &str) -> Result<Reference> {
    let r: Reference = value.parse().with_context(|| format!("{flag} {value}"))?;
    if r.digest.is_some() {
        bail!("{flag} {value}: give REGISTRY/REPO without a digest (the user-data pins the build's digests)");
    }
    Ok(Reference { tag: None, digest: None, ..r })
}

impl Instance {
    /// The instance settings these flags describe; `None` without `--boot-repository`.
    ///
    /// # Errors
    /// A repository that is not a reference or names a digest, a mirror that is not
    /// `ORIGIN=HOST[:PORT]`, an insecure registry that is not `HOST[:PORT]`, a kernel argument
    /// that does not parse; each names its flag.
    pub fn from_flags(flags: &UserDataFlags) -> Result<Option<Instance>> {
        let Some(boot) = &flags.boot_repository else { return Ok(None) };
        let boot_repository = repository("--boot-repository", boot)?;
        let agent_repository = match &flags.agent_repository {
            Some(a) => repository("--agent-repository", a)?,
            None => {
                Reference { repository: format!("{}-agent", boot_repository.repository), ..boot_repository.clone() }
            }
        };
        let mut mirrors = Vec::new();
        for m in &flags.instance_registry_mirrors {
            mirrors.push(m.parse::<Mirror>().with_context(|| format!("--instance-registry-mirror {m}"))?);
        }
        for h in &flags.instance_insecure_registries {
            if h.is_empty() || h.contains(['/', ' ', '=']) {
                bail!("--instance-insecure-registry {h:?}: expected HOST[:PORT], e.g. 10.20.13.140:5000");
            }
        }
        for arg in &flags.instance_kernel_args {
            kernel_cmdline::Cmdline::parse(arg).with_context(|| format!("--instance-kernel-arg {arg:?}"))?;
        }
        let signature_key = match &flags.instance_signature_key {
            None => None,
            Some(path) => {
                let key = boot_artifact::cosign::PublicKey::from_pem_file(path)
                    .map_err(|e| anyhow::anyhow!("--instance-signature-key {}: {e}", path.display()))?;
                Some(key.spki_base64())
            }
        };
        Ok(Some(Instance {
            boot_repository,
            agent_repository,
            mirrors,
            insecure_registries: flags.instance_insecure_registries.clone(),
            report: flags.report.clone(),
            report_token: flags.report_token.clone(),
            talos_config: flags.talos_config.clone(),
            extra_kernel_args: flags.instance_kernel_args.clone(),
            signature_key,
        }))
    }
}

/// Where the user-data comes from, for the comment at its top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// Talos version of the boot artifact.
    pub talos_version: String,
    /// Image Factory schematic ID of the boot artifact.
    pub schematic_id: String,
    /// The imager that rendered it.
    pub imager_version: String,
}

impl Provenance {
    /// A boot artifact of `talos_version` and `schematic_id`, rendered by this imager.
    pub fn new(talos_version: &str, schematic_id: &str) -> Provenance {
        Provenance {
            talos_version: talos_version.to_string(),
            schematic_id: schematic_id.to_string(),
            imager_version: format!("v{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Everything one EC2 user-data says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserData {
    /// The instance's architecture.
    pub arch: Arch,
    /// The boot artifact's manifest digest for `arch` (`boot-<arch>@manifest` in build.json).
    pub boot_digest: Sha256Digest,
    /// The talos-agent binary's digest: the blob `imager publish --agent-to` pushes.
    pub agent_digest: Sha256Digest,
    /// Repositories, registries and what `talos-agent boot` passes on.
    pub instance: Instance,
    /// The comment at the top.
    pub provenance: Provenance,
}

impl UserData {
    /// `REGISTRY/REPO@sha256:…`: what `talos-agent boot` boots.
    pub fn boot_source(&self) -> String {
        let r = &self.instance.boot_repository;
        format!("{}/{}@{}", r.registry, r.repository, self.boot_digest)
    }

    /// The talos-agent blob's URLs, in the order the instance tries them: for each endpoint of the
    /// agent repository ([`Reference::endpoints`]: mirrors first, then the origin; plain HTTP only
    /// for insecure hosts), `<base_url>/v2/<repository>/blobs/<digest>`.
    pub fn agent_urls(&self) -> Vec<String> {
        let r = &self.instance.agent_repository;
        r.endpoints(&self.instance.mirrors, &self.instance.insecure_registries)
            .iter()
            .map(|e| format!("{}/v2/{}/blobs/{}", e.base_url(), r.repository, self.agent_digest))
            .collect()
    }

    /// The options of `talos-agent boot` after SOURCE, as (agent flag, the imager flag it comes
    /// from, value): `--registry-mirror` per mirror, `--insecure-registry` per insecure registry,
    /// `--report`, `--report-token`, `--talos-config`, `--extra-kernel-arg` per argument. The
    /// platform is left to the agent (aws on EC2).
    pub fn boot_args(&self) -> Vec<(&'static str, &'static str, String)> {
        let i = &self.instance;
        let mut out = Vec::new();
        out.extend(
            i.mirrors
                .iter()
                .map(|m| ("--registry-mirror", "--instance-registry-mirror", format!("{}={}", m.origin, m.host))),
        );
        out.extend(
            i.insecure_registries.iter().map(|h| ("--insecure-registry", "--instance-insecure-registry", h.clone())),
        );
        out.extend(i.report.iter().map(|r| ("--report", "--report", r.clone())));
        out.extend(i.report_token.iter().map(|t| ("--report-token", "--report-token", t.clone())));
        out.extend(i.talos_config.iter().map(|c| ("--talos-config", "--talos-config", c.clone())));
        out.extend(i.extra_kernel_args.iter().map(|a| ("--extra-kernel-arg", "--instance-kernel-arg", a.clone())));
        out
    }
}

/// Why `value` cannot be carried in a line of the user-data, if it cannot: a newline, a control
/// character, or what YAML 1.1 (cloud-init's PyYAML) also takes for a line break (U+2028,
/// U+2029; U+0085 is a control character) or a byte order mark.
fn unsafe_in_line(value: &str) -> Option<&'static str> {
    value.chars().find_map(|c| match c {
        '\n' | '\r' => Some("a newline"),
        '\u{2028}' | '\u{2029}' => Some("a Unicode line separator"),
        '\u{feff}' => Some("a byte order mark"),
        c if c.is_control() => Some("a control character"),
        _ => None,
    })
}

/// `value` as one single-quoted shell word.
///
/// # Errors
/// `value` holds `'`, a newline or a control character; the message names `flag`.
pub fn sh_word(flag: &str, value: &str) -> Result<String> {
    let quote = value.contains('\'').then_some("a single quote (')");
    if let Some(why) = quote.or_else(|| unsafe_in_line(value)) {
        bail!("{flag} {value:?}: holds {why}, which the EC2 user-data cannot carry");
    }
    Ok(format!("'{value}'"))
}

/// `value` for a comment line (as is, one line).
fn comment_text(what: &str, value: &str) -> Result<String> {
    match unsafe_in_line(value) {
        Some(why) => bail!("{what} {value:?}: holds {why}, which the EC2 user-data cannot carry"),
        None => Ok(value.to_string()),
    }
}

/// Fills `template`: drops lines starting with `##`, replaces every `@@NAME@@` with
/// `values[NAME]` (values are not scanned again).
///
/// # Errors
/// A placeholder without a value, a value without a placeholder, a lone `@@`.
pub fn fill(template: &str, values: &BTreeMap<&str, String>) -> Result<String> {
    let mut out = String::with_capacity(template.len() + 1024);
    let mut used = std::collections::BTreeSet::new();
    for line in template.split_inclusive('\n').filter(|l| !l.starts_with("##")) {
        let mut rest = line;
        while let Some(start) = rest.find("@@") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find("@@") else {
                bail!("template: a lone @@ in {:?}", line.trim_end());
            };
            let name = &after[..end];
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') {
                bail!("template: @@{name}@@ is not a placeholder name (A-Z, 0-9, _) in {:?}", line.trim_end());
            }
            let value = values.get(name).with_context(|| format!("template: no value for @@{name}@@"))?;
            out.push_str(value);
            used.insert(name);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
    }
    if let Some(unused) = values.keys().find(|k| !used.contains(*k)) {
        bail!("template: a value for @@{unused}@@, which the template does not have");
    }
    Ok(out)
}

/// The user-data text, without the size check.
fn render_text(u: &UserData) -> Result<String> {
    let arch = u.arch.as_str();
    let boot = u.boot_source();
    let urls = u.agent_urls();
    let mut flags = String::new();
    for (flag, from, value) in u.boot_args() {
        flags.push_str(&format!(" {flag}={}", sh_word(from, &value)?));
    }
    let words = urls.iter().map(|url| sh_word("--agent-repository", url)).collect::<Result<Vec<_>>>()?;
    let p = &u.provenance;
    let values = BTreeMap::from([
        ("ARCH", sh_word("--arch", arch)?),
        ("ARCH_TEXT", arch.to_string()),
        ("AGENT_DIGEST", sh_word("talos-agent digest", &u.agent_digest.to_string())?),
        ("AGENT_SHA256", sh_word("talos-agent digest", &u.agent_digest.hex())?),
        ("AGENT_REPOSITORY", sh_word("--agent-repository", &u.instance.agent_repository.repository)?),
        ("AGENT_URLS", words.join(" ")),
        ("BOOT_REF", sh_word("--boot-repository", &boot)?),
        ("BOOT_REF_TEXT", boot.clone()),
        ("BOOT_FLAGS", flags),
        (
            "SIGNATURE_KEY",
            sh_word("--instance-signature-key", u.instance.signature_key.as_deref().unwrap_or_default())?,
        ),
        ("TALOS_VERSION", comment_text("Talos version", &p.talos_version)?),
        ("SCHEMATIC_ID", comment_text("schematic ID", &p.schematic_id)?),
        ("IMAGER_VERSION", comment_text("imager version", &p.imager_version)?),
    ]);
    fill(TEMPLATE, &values)
}

/// Refuses user-data over EC2's [`MAX_USER_DATA`] bytes.
fn check_size(len: usize, form: &str) -> Result<()> {
    if len > MAX_USER_DATA {
        bail!(
            "the {form} EC2 user-data is {len} bytes, over EC2's {MAX_USER_DATA}-byte limit (before base64); \
             use fewer or shorter --instance-* values{}",
            if form == "gzip'd" { "" } else { ", or imager cloud-init --gzip" }
        );
    }
    Ok(())
}

/// Renders the EC2 user-data (`#cloud-config`).
///
/// # Errors
/// A value that cannot be carried (naming its flag), or more than [`MAX_USER_DATA`] bytes.
pub fn render_ec2(u: &UserData) -> Result<String> {
    let text = render_text(u)?;
    check_size(text.len(), "rendered")?;
    Ok(text)
}

/// The bytes to give EC2: [`render_ec2`]'s text, or its [`gzip`] with `gzip` (then the limit
/// applies to the gzip'd bytes).
///
/// # Errors
/// As [`render_ec2`].
pub fn render_ec2_bytes(u: &UserData, gzip: bool) -> Result<Vec<u8>> {
    if !gzip {
        return Ok(render_ec2(u)?.into_bytes());
    }
    let gz = self::gzip(render_text(u)?.as_bytes());
    check_size(gz.len(), "gzip'd")?;
    Ok(gz)
}

/// gzip of `data`, deterministic: maximum compression, mtime 0, no file name.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::best());
    gz.write_all(data).expect("writing to memory");
    gz.finish().expect("writing to memory")
}

/// What the user-data needs from an `imager build` output for one architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOutput {
    /// The boot artifact's manifest digest.
    pub boot_digest: Sha256Digest,
    /// The static talos-agent binary's digest.
    pub agent_digest: Sha256Digest,
    /// Talos version and schematic ID (the imager version is this one's).
    pub provenance: Provenance,
}

/// Reads what the user-data for `arch` needs from the `imager build` output `dir`: the boot
/// artifact's manifest digest (build.json's `outputs["boot-<arch>@manifest"]` when build.json is
/// for `arch`, else the `boot-<arch>/` layout, since several builds may share one directory)
/// and the digest of `talos-agent-<arch>`, checked to be a static binary for `arch`.
///
/// # Errors
/// A missing or unreadable file, with the `imager build` that writes it.
pub fn read_build_output(dir: &Path, arch: Arch) -> Result<BuildOutput> {
    #[derive(serde::Deserialize)]
    struct BuildJson {
        arch: String,
        talos_version: String,
        schematic_id: String,
        outputs: BTreeMap<String, String>,
    }
    let a = arch.as_str();
    let build_cmd = format!("imager build --arch {a} --output {}", dir.display());
    let json_path = dir.join("build.json");
    let build: Option<BuildJson> = match std::fs::read(&json_path) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).with_context(|| format!("reading {}", json_path.display()))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", json_path.display())),
    };
    let layout_dir = crate::publish::boot_layout_dir(dir, a);
    let (boot_digest, talos_version, schematic_id) = match build {
        Some(b) if b.arch == a => {
            let key = format!("boot-{a}@manifest");
            let d = b.outputs.get(&key).with_context(|| format!("{}: no outputs[{key:?}]", json_path.display()))?;
            let d = d.parse().with_context(|| format!("{}: outputs[{key:?}]", json_path.display()))?;
            (d, b.talos_version, b.schematic_id)
        }
        other if crate::oci_layout::OciLayout::is_layout(&layout_dir) => {
            let _ = other;
            let layout = crate::oci_layout::OciLayout::open(&layout_dir)?;
            let image = layout.resolve(Some(a))?;
            if !boot_artifact::artifact::is_boot_artifact(&image.manifest) {
                bail!("{}: not a boot artifact ({build_cmd} writes one)", layout_dir.display());
            }
            let ann = |k: &str| image.manifest.annotation(k).unwrap_or_default().to_string();
            (
                image.descriptor.digest,
                ann(boot_artifact::artifact::ANNOTATION_TALOS_VERSION),
                ann(boot_artifact::artifact::ANNOTATION_SCHEMATIC_ID),
            )
        }
        Some(b) => bail!(
            "{} is for {}, and there is no {}/: no boot artifact for {a} ({build_cmd} writes them)",
            json_path.display(),
            b.arch,
            layout_dir.display()
        ),
        None => bail!("{}: not found ({build_cmd} writes it)", json_path.display()),
    };
    let bin_path = crate::publish::agent_binary_path(dir, a);
    let bin = match std::fs::read(&bin_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{}: not found ({build_cmd} writes it when it packs talos-agent, i.e. without --no-talos-agent)",
            bin_path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", bin_path.display())),
    };
    crate::build::agent_extension::check_binary(&bin, a, &bin_path.display().to_string())?;
    Ok(BuildOutput {
        boot_digest,
        agent_digest: Sha256Digest::of(&bin),
        provenance: Provenance::new(&talos_version, &schematic_id),
    })
}

/// Writes `bytes` to `path` (mode 0644) through a temporary file in the same directory (created),
/// so a reader never sees half a file.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(&parent).with_context(|| format!("writing {}", path.display()))?;
    tmp.write_all(bytes).with_context(|| format!("writing {}", path.display()))?;
    // The mode `imager build` gives its outputs (a temporary file is 0600).
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Runs `imager cloud-init`: renders the EC2 user-data for a build output and writes it.
///
/// # Errors
/// Invalid flags, a build output without what the user-data needs, a rendering that cannot be
/// carried or is too large, a failed write.
pub fn run(args: &Args) -> Result<()> {
    let instance = Instance::from_flags(&args.user_data)?.context("--boot-repository is required")?;
    let built = read_build_output(&args.from, args.arch)?;
    let user_data = UserData {
        arch: args.arch,
        boot_digest: built.boot_digest,
        agent_digest: built.agent_digest,
        instance,
        provenance: built.provenance,
    };
    let bytes = render_ec2_bytes(&user_data, args.gzip)?;
    let target = match &args.output {
        Some(p) if p.as_os_str() == "-" => None,
        Some(p) => Some(p.clone()),
        None => Some(args.from.join(OUTPUT_DIR).join(file_name(args.arch, args.gzip))),
    };
    match &target {
        None => std::io::stdout().write_all(&bytes).context("writing standard output")?,
        Some(p) => write_file(p, &bytes)?,
    }
    eprintln!(
        "imager: {}: {} bytes of EC2 user-data (limit {MAX_USER_DATA}{}): talos-agent {} boots {}",
        target.as_ref().map_or("standard output".to_string(), |p| p.display().to_string()),
        bytes.len(),
        if args.gzip { ", gzip'd" } else { "" },
        user_data.agent_digest,
        user_data.boot_source(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    const AGENT: &str = "sha256:486ea46224d1bb4fb680f34f7c9ad96a8f24ec88be73ea8e5a6c65260e9cb8a7";

    fn flags() -> UserDataFlags {
        UserDataFlags {
            boot_repository: Some("ghcr.io/moonboot/boot:v1.10.5".into()),
            agent_repository: None,
            instance_registry_mirrors: vec!["ghcr.io=10.20.13.140:5000".into(), "ghcr.io=10.20.13.141:5000".into()],
            instance_insecure_registries: vec!["10.20.13.140:5000".into()],
            report: Some("http://10.20.13.140:8090/v1/report".into()),
            report_token: Some("t0k3n".into()),
            talos_config: Some("http://10.20.13.140:8081/config.yaml".into()),
            instance_kernel_args: vec!["-console=tty1".into(), "talos.dashboard.disabled=1".into()],
            instance_signature_key: None,
        }
    }

    fn user_data(f: &UserDataFlags) -> Result<UserData> {
        Ok(UserData {
            arch: Arch::Arm64,
            boot_digest: BOOT.parse().unwrap(),
            agent_digest: AGENT.parse().unwrap(),
            instance: Instance::from_flags(f)?.expect("--boot-repository"),
            provenance: Provenance {
                talos_version: "v1.10.5".into(),
                schematic_id: "c0f06d3cffeec27089a195ee6942ee0e1911b8521d21d7e4afde5e023fbff114".into(),
                imager_version: "v0.1.0".into(),
            },
        })
    }

    #[derive(serde::Deserialize, Debug)]
    struct CloudConfig {
        output: BTreeMap<String, String>,
        write_files: Vec<WriteFile>,
        runcmd: Vec<Vec<String>>,
    }
    #[derive(serde::Deserialize, Debug)]
    struct WriteFile {
        path: String,
        owner: String,
        permissions: String,
        content: String,
    }

    fn parse(text: &str) -> CloudConfig {
        crate::yaml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn renders_the_pinned_reference_the_agent_digest_and_the_endpoints_in_order() {
        let u = user_data(&flags()).unwrap();
        let text = render_ec2(&u).unwrap();
        assert!(text.starts_with("#cloud-config\n"), "{text}");
        assert!(!text.contains("@@") && !text.contains("\n##"), "{text}");
        let source = format!("ghcr.io/moonboot/boot@{BOOT}");
        assert_eq!(u.boot_source(), source);
        let script = &parse(&text).write_files[0].content;
        assert!(script.contains(&format!("boot_ref='{source}'\n")), "{script}");
        assert!(script.contains(&format!("agent_digest='{AGENT}'\n")), "{script}");
        assert!(script.contains(&format!("agent_sha256='{}'\n", &AGENT[7..])), "{script}");
        assert!(script.contains("agent_repository='moonboot/boot-agent'\n"), "{script}");
        // Mirrors first in the order given, plain HTTP only for the insecure one, then the origin.
        let urls = format!(
            "set -- 'http://10.20.13.140:5000/v2/moonboot/boot-agent/blobs/{AGENT}' \
             'https://10.20.13.141:5000/v2/moonboot/boot-agent/blobs/{AGENT}' \
             'https://ghcr.io/v2/moonboot/boot-agent/blobs/{AGENT}'\n"
        );
        assert!(script.contains(&urls), "{script}");
        let boot = "\"$agent\" boot \"$boot_ref\" --registry-mirror='ghcr.io=10.20.13.140:5000' \
             --registry-mirror='ghcr.io=10.20.13.141:5000' --insecure-registry='10.20.13.140:5000' \
             --report='http://10.20.13.140:8090/v1/report' --report-token='t0k3n' \
             --talos-config='http://10.20.13.140:8081/config.yaml' --extra-kernel-arg='-console=tty1' \
             --extra-kernel-arg='talos.dashboard.disabled=1' ${key_file:+--signature-key \"$key_file\"}\n";
        assert!(script.contains(boot), "{script}");
        assert!(script.contains("signature_key=''\n"), "no key given: {script}");
        assert!(!script.contains("--platform"), "the agent detects aws itself");
        // The comment at the top names what it boots.
        assert!(text.contains(&format!("\n# {source}\n")), "{text}");
        assert!(text.contains("boots Talos v1.10.5 by kexec,\n# schematic c0f06d3c"), "{text}");
    }

    #[test]
    fn the_yaml_writes_the_script_and_runs_it_once_per_instance() {
        let text = render_ec2(&user_data(&flags()).unwrap()).unwrap();
        let c = parse(&text);
        assert_eq!(c.write_files.len(), 1);
        let f = &c.write_files[0];
        assert_eq!(f.path, SCRIPT_PATH);
        assert_eq!(f.permissions, "0755");
        assert_eq!(f.owner, "root:root");
        assert!(f.content.starts_with("#!/bin/sh\n"), "{}", f.content);
        assert_eq!(c.runcmd, vec![vec!["cloud-init-per", "instance", PER_INSTANCE_NAME, SCRIPT_PATH]]);
        assert_eq!(c.output["all"], "| tee -a /var/log/cloud-init-output.log");
        // Every line the script prints is a `log` line, prefixed `moonboot: `.
        assert!(f.content.contains("log() { printf 'moonboot: %s\\n' \"$*\"; }"));
        assert!(!f.content.contains("echo "), "every line goes through log()");
        assert!(!f.content.contains("--location-trusted"), "Authorization must not follow redirects");
        assert!(f.content.contains("curl -fsSL --retry 5 --retry-connrefused --connect-timeout 10 --max-time 300"));
    }

    #[test]
    fn the_script_is_valid_posix_sh() {
        let text = render_ec2(&user_data(&flags()).unwrap()).unwrap();
        let script = parse(&text).write_files.remove(0).content;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("moonboot-talos-boot");
        std::fs::write(&path, &script).unwrap();
        for shell in ["dash", "sh"] {
            let out = match std::process::Command::new(shell).arg("-n").arg(&path).output() {
                Ok(o) => o,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && shell == "dash" => continue,
                Err(e) => panic!("{shell}: {e}"),
            };
            assert!(out.status.success(), "{shell} -n: {}", String::from_utf8_lossy(&out.stderr));
        }
        // A broken script is caught, so the check above means something.
        std::fs::write(&path, format!("{script}\nif then\n")).unwrap();
        assert!(!std::process::Command::new("sh").arg("-n").arg(&path).output().unwrap().status.success());
    }

    #[test]
    fn refuses_quotes_newlines_and_control_characters_naming_the_flag() {
        type Case = (Box<dyn Fn(&mut UserDataFlags)>, &'static str);
        let cases: Vec<Case> = vec![
            (Box::new(|f| f.report_token = Some("it's".into())), "--report-token \"it's\": holds a single quote"),
            (Box::new(|f| f.talos_config = Some("http://x/\nrm -rf /".into())), "--talos-config"),
            (Box::new(|f| f.report = Some("http://x/\u{1b}[2J".into())), "--report"),
            (Box::new(|f| f.instance_insecure_registries.push("a'b:1".into())), "--instance-insecure-registry"),
            (
                Box::new(|f| f.talos_config = Some("http://x/\u{2028}runcmd: [reboot]".into())),
                "--talos-config \"http://x/\\u{2028}runcmd: [reboot]\": holds a Unicode line separator",
            ),
        ];
        for (set, want) in cases {
            let mut f = flags();
            set(&mut f);
            let err = user_data(&f).and_then(|u| render_ec2(&u)).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(want), "{msg:?} lacks {want:?}");
            assert!(!msg.contains('\n'), "one line: {msg:?}");
        }
        // Kernel arguments are checked as kernel parameters first (a newline is a control byte).
        let mut f = flags();
        f.instance_kernel_args.push("a=b\nc".into());
        assert!(format!("{:#}", user_data(&f).unwrap_err()).starts_with("--instance-kernel-arg"));
        let mut f = flags();
        f.instance_kernel_args.push("a='b c'".into());
        let msg = format!("{:#}", user_data(&f).and_then(|u| render_ec2(&u)).unwrap_err());
        assert!(msg.starts_with("--instance-kernel-arg \"a='b c'\": holds a single quote"), "{msg}");
        // Other flags.
        let mut f = flags();
        f.boot_repository = Some(format!("ghcr.io/moonboot/boot@{BOOT}"));
        assert!(format!("{:#}", user_data(&f).unwrap_err()).contains("without a digest"));
        let mut f = flags();
        f.instance_registry_mirrors.push("10.20.13.140:5000".into());
        assert!(format!("{:#}", user_data(&f).unwrap_err()).starts_with("--instance-registry-mirror 10.20.13.140:5000"));
        assert!(
            sh_word("--x", "ok value with spaces $HOME `x` \"q\"").unwrap() == "'ok value with spaces $HOME `x` \"q\"'"
        );
        let mut u = user_data(&flags()).unwrap();
        u.provenance.talos_version = "v1.10.5\nruncmd: [reboot]".into();
        assert!(format!("{:#}", render_ec2(&u).unwrap_err()).starts_with("Talos version \"v1.10.5\\nruncmd"));
    }

    #[test]
    fn the_agent_repository_defaults_next_to_the_boot_repository() {
        let mut f = flags();
        f.boot_repository = Some("10.20.13.140:5000/moonboot/boot".into());
        f.instance_registry_mirrors.clear();
        let u = user_data(&f).unwrap();
        assert_eq!(u.instance.agent_repository.to_string(), "10.20.13.140:5000/moonboot/boot-agent");
        assert_eq!(u.agent_urls(), [format!("http://10.20.13.140:5000/v2/moonboot/boot-agent/blobs/{AGENT}")]);
        f.agent_repository = Some("ghcr.io/moonboot/talos-agent-binary:v0.1.0".into());
        let u = user_data(&f).unwrap();
        assert_eq!(u.agent_urls(), [format!("https://ghcr.io/v2/moonboot/talos-agent-binary/blobs/{AGENT}")]);
    }

    #[test]
    fn refuses_user_data_over_16_kib_and_gzip_fits_it() {
        let mut f = flags();
        // About 18 KB of kernel arguments: too large raw, small gzip'd (they repeat).
        f.instance_kernel_args = (0..600).map(|i| format!("moonboot.padding{i}=xxxxxxxx")).collect();
        let u = user_data(&f).unwrap();
        let err = format!("{:#}", render_ec2(&u).unwrap_err());
        assert!(err.contains("over EC2's 16384-byte limit"), "{err}");
        let size = render_text(&u).unwrap().len();
        assert!(size > MAX_USER_DATA);
        assert!(err.contains(&format!("is {size} bytes")), "the size is named: {err}");
        let gz = render_ec2_bytes(&u, true).unwrap();
        assert!(gz.len() <= MAX_USER_DATA);
        // Random-looking values do not compress: refused gzip'd too.
        f.instance_kernel_args =
            (0..1200u32).map(|i| format!("k{i}={}", &Sha256Digest::of(&i.to_le_bytes()).hex()[..24])).collect();
        let err = format!("{:#}", render_ec2_bytes(&user_data(&f).unwrap(), true).unwrap_err());
        assert!(err.contains("the gzip'd EC2 user-data is"), "{err}");
        // A typical rendering is far below the limit.
        assert!(render_ec2(&user_data(&flags()).unwrap()).unwrap().len() < MAX_USER_DATA / 2);
    }

    #[test]
    fn gzip_round_trips_and_rendering_is_deterministic() {
        let u = user_data(&flags()).unwrap();
        let text = render_ec2(&u).unwrap();
        assert_eq!(text, render_ec2(&u.clone()).unwrap());
        let gz = render_ec2_bytes(&u, true).unwrap();
        assert_eq!(gz, render_ec2_bytes(&u, true).unwrap(), "gzip is deterministic");
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        assert_eq!(&gz[4..8], &[0, 0, 0, 0], "mtime 0");
        assert_eq!(gz[3] & 0x08, 0, "no file name");
        let mut back = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut back).unwrap();
        assert_eq!(back, text);
        assert!(gz.len() < text.len());
    }

    #[test]
    fn fill_refuses_unfilled_and_unknown_placeholders() {
        let v = |pairs: &[(&'static str, &str)]| -> BTreeMap<&'static str, String> {
            pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
        };
        assert_eq!(fill("## note\na=@@A@@ @@B@@\n", &v(&[("A", "1"), ("B", "@@A@@")])).unwrap(), "a=1 @@A@@\n");
        assert!(fill("a=@@A@@\n", &v(&[])).unwrap_err().to_string().contains("no value for @@A@@"));
        assert!(fill("a\n", &v(&[("A", "1")])).unwrap_err().to_string().contains("@@A@@, which the template does not"));
        assert!(fill("a=@@A\n", &v(&[("A", "1")])).unwrap_err().to_string().contains("lone @@"));
        assert!(fill("a=@@a b@@\n", &v(&[])).is_err());
    }
}
