//! Step 4 of `imager build`: every output written into a new directory (kernel, initramfs,
//! command lines, the boot artifact and talos-agent extension layouts, the agent binary, the
//! EC2 user-data, the board image), then `build.json` and `SHA256SUMS`, then the move into
//! `--output`.

use super::*;
use build_json::*;

/// Step 4, outputs: writes every output into the new directory `out` (the names in the module
/// docs): kernel, initramfs, both command lines, the boot artifact and talos-agent extension
/// layouts, `build.json` and `SHA256SUMS`. Returns the boot artifact's manifest digest.
///
/// # Errors
/// Any failure to write.
pub(super) fn write_outputs(plan: &Plan, pulled: &Pulled, assembled: &Assembled, out: &Path) -> Result<String> {
    let arch = plan.arch.as_str();
    let epoch = plan.epoch;
    std::fs::create_dir(out)?;
    let write = |name: &str, data: &[u8]| -> Result<()> {
        std::fs::write(out.join(name), data).with_context(|| format!("writing {name}"))
    };
    line("writing outputs");
    write(&format!("kernel-{arch}"), &pulled.vmlinuz)?;
    write(&format!("initramfs-metal-{arch}.xz"), &assembled.initramfs.initramfs)?;
    write(&format!("cmdline-metal-{arch}"), plan.cmdline_metal.as_bytes())?;
    write(&format!("cmdline-aws-{arch}"), plan.cmdline_aws.as_bytes())?;
    if let Some(sbom) = &pulled.sbom {
        write(&format!("talos-{arch}.spdx.json"), sbom)?;
    }
    let boot = artifact::write_boot_artifact(
        &out.join(format!("boot-{arch}")),
        &artifact::BootArtifact {
            arch,
            kernel: &assembled.kernel_image,
            initramfs: &assembled.initramfs.initramfs,
            cmdline: &plan.cmdline_metal,
            talos_version: &plan.profile.talos_version,
            schematic_id: &assembled.schematic_id,
            extensions: &assembled.notes,
            epoch,
        },
    )?;

    // Netboot assets: the boot artifact's kernel (iPXE starts it as an EFI application) and
    // initramfs, under the metal command line.
    crate::netboot::write_netboot(
        &out.join("netboot"),
        &[crate::netboot::BootFiles {
            arch: arch.to_string(),
            talos_version: plan.profile.talos_version.clone(),
            schematic_id: assembled.schematic_id.clone(),
            kernel: assembled.kernel_image.clone(),
            initramfs: assembled.initramfs.initramfs.clone(),
            cmdline: plan.cmdline_metal.clone(),
        }],
        &crate::netboot::Options { ipxe: pulled.ipxe.clone(), ..plan.netboot.clone() },
    )?;

    let agent_image = match &pulled.agent_layer {
        Some((tar, version)) => Some(artifact::write_extension_image(
            &out.join(format!("extension-talos-agent-{arch}")),
            arch,
            tar,
            epoch,
            version,
        )?),
        None => None,
    };

    // The static talos-agent binary, for `imager publish --agent-to` and the EC2 user-data.
    match &pulled.agent_binary {
        Ok(bin) => {
            use std::os::unix::fs::PermissionsExt;
            let path = crate::publish::agent_binary_path(out, arch);
            std::fs::write(&path, bin)
                .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Err(why) => line(&format!("note: no talos-agent-{arch} written: {why}")),
    }
    write_user_data(plan, pulled, assembled, &boot.digest, out)?;

    let board = match &plan.board {
        None => None,
        Some(b) => {
            line(&format!("writing the {} disk image ({} bytes)", b.board.as_str(), b.disk_size));
            let talos = crate::board::Talos {
                vmlinuz: &pulled.vmlinuz,
                initramfs: assembled.board_initramfs.as_ref().unwrap_or(&assembled.initramfs.initramfs),
                cmdline: &b.cmdline,
                talos_version: &plan.profile.talos_version,
            };
            let inputs = pulled.board_inputs.clone().context("the board inputs were pulled with the plan's board")?;
            Some(crate::board::write_rpi_cm3(out, &talos, inputs, b.disk_size)?)
        }
    };

    let mut outputs = sums(out)?;
    outputs.insert(format!("boot-{arch}@manifest"), boot.digest.to_string());
    if let Some(desc) = &agent_image {
        outputs.insert(format!("extension-talos-agent-{arch}@manifest"), desc.digest.to_string());
    }
    let build = BuildJson {
        tool: Tool { name: "imager", version: env!("CARGO_PKG_VERSION") },
        arch: arch.to_string(),
        talos_version: plan.profile.talos_version.clone(),
        source_date_epoch: epoch,
        schematic_id: assembled.schematic_id.clone(),
        schematic: assembled.schematic_yaml.clone(),
        inputs: Inputs {
            base: pulled.base_input.clone(),
            extensions_bundle: pulled.extensions_bundle.clone(),
            overlays_bundle: pulled.overlay.as_ref().map(|(b, _, _)| b.clone()),
            overlay: pulled.overlay.as_ref().map(|(_, o, _)| o.clone()),
            extensions: pulled.extensions.iter().map(|v| v.input.clone()).collect(),
            extra_kernel_args: plan.profile.extra_kernel_args.clone(),
        },
        signatures: super::build_json::Signatures {
            policy: plan.signatures.name(),
            key: match &plan.signatures {
                super::pull::SignaturePolicy::Key(k) => Some(k.fingerprint().to_string()),
                _ => None,
            },
            verified: pulled.signatures.clone(),
        },
        initramfs_layers: assembled
            .initramfs
            .layers
            .iter()
            .zip(&assembled.initramfs.squashfs_sizes)
            .map(|((image, ext), size)| LayerNote { image: image.clone(), extension: ext.clone(), size: *size })
            .collect(),
        board,
        outputs,
    };
    let mut json = serde_json::to_vec_pretty(&build)?;
    json.push(b'\n');
    write("build.json", &json)?;
    let mut all = build.outputs;
    all.retain(|k, _| !k.ends_with("@manifest"));
    all.insert("build.json".to_string(), Sha256Digest::of(&json).to_string());
    let mut sums_text = String::new();
    for (path, digest) in all {
        sums_text.push_str(&format!("{}  {path}\n", digest.trim_start_matches("sha256:")));
    }
    write("SHA256SUMS", sums_text.as_bytes())?;
    Ok(boot.digest.to_string())
}

/// Writes `cloud-init/user-data-ec2-<arch>.yaml` into `out` when `--boot-repository` was given
/// and the build has a talos-agent binary; otherwise prints one note saying why not and how to
/// render it later.
///
/// # Errors
/// Rendering (checked in [`plan`] already) or writing failed.
pub(super) fn write_user_data(
    plan: &Plan,
    pulled: &Pulled,
    assembled: &Assembled,
    boot: &Sha256Digest,
    out: &Path,
) -> Result<()> {
    use crate::cloud_init;
    let arch = plan.arch.as_str();
    let (instance, bin) = match (&plan.user_data, &pulled.agent_binary) {
        (Some(instance), Ok(bin)) => (instance, bin),
        (None, Ok(_)) => {
            line(&format!(
                "note: no EC2 user-data written (no --boot-repository); render it later with \
                 `imager cloud-init --from {} --arch {arch} --boot-repository REGISTRY/REPO …`",
                plan.output.display()
            ));
            return Ok(());
        }
        (_, Err(why)) => {
            if plan.user_data.is_some() {
                line(&format!("note: no EC2 user-data written: it runs the talos-agent binary, and {why}"));
            }
            return Ok(());
        }
    };
    let user_data = cloud_init::UserData {
        arch: plan.arch,
        boot_digest: *boot,
        agent_digest: Sha256Digest::of(bin),
        instance: instance.clone(),
        provenance: cloud_init::Provenance::new(&plan.profile.talos_version, &assembled.schematic_id),
    };
    let text = cloud_init::render_ec2(&user_data)?;
    let dir = out.join(cloud_init::OUTPUT_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = cloud_init::file_name(plan.arch, false);
    std::fs::write(dir.join(&name), &text).with_context(|| format!("writing {}/{name}", cloud_init::OUTPUT_DIR))?;
    line(&format!(
        "EC2 user-data {}/{name} ({} bytes): boots {} with talos-agent {}",
        cloud_init::OUTPUT_DIR,
        text.len(),
        user_data.boot_source(),
        user_data.agent_digest
    ));
    Ok(())
}

/// `sha256:` digests of every regular file under `dir` except `SHA256SUMS`, by relative path.
pub(super) fn sums(dir: &Path) -> Result<BTreeMap<String, String>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                walk(root, &p, out)?;
            } else {
                let rel = p.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
                if rel == "SHA256SUMS" {
                    continue;
                }
                // An OCI layout blob was hashed from these very bytes when this build wrote it
                // (its name is that digest): no second pass over the kernel and initramfs.
                let named = rel
                    .rsplit_once("/blobs/sha256/")
                    .and_then(|(_, hex)| format!("sha256:{hex}").parse::<Sha256Digest>().ok());
                let digest = match named {
                    Some(d) => d,
                    None => Sha256Digest::of(&std::fs::read(&p)?),
                };
                out.insert(rel, digest.to_string());
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// Moves every top-level entry of `from` into `to` (created if needed), replacing entries of the
/// same name; the entries of `cloud-init/` are moved one by one, so that the user-data of
/// another architecture built into the same directory stays.
pub(super) fn install(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let mut names: Vec<_> = std::fs::read_dir(from)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let dest = to.join(&name);
        if name == crate::cloud_init::OUTPUT_DIR && dest.is_dir() && !dest.is_symlink() {
            install(&from.join(&name), &dest)?;
            continue;
        }
        match std::fs::symlink_metadata(&dest) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&dest)?,
            Ok(_) => std::fs::remove_file(&dest)?,
            Err(_) => {}
        }
        std::fs::rename(from.join(&name), &dest).with_context(|| format!("moving into {}", dest.display()))?;
    }
    Ok(())
}
