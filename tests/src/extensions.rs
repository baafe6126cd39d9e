//! Stand-in Talos system extension images (TEST FIXTURES): `siderolabs/spin` and
//! `siderolabs/tailscale` as pinned by siderolabs/extensions at tag `v1.10.5` (the release that
//! goes with Talos v1.10.5).
//!
//! Flattened, each image holds only `manifest.yaml` and `rootfs/` (Talos
//! `pkg/machinery/extensions/load.go`). Paths, `manifest.yaml`, the CRI config part and the
//! extension service spec are those of siderolabs/extensions v1.10.5
//! (`container-runtime/spin/{manifest.yaml,10-spin.part,pkg.yaml}`, `container-runtime/vars.yaml`
//! `SPIN_VERSION: v0.19.0`; `network/tailscale/{manifest.yaml,tailscale.yaml,pkg.yaml}`,
//! `network/vars.yaml` `TAILSCALE_VERSION: 1.84.0`; `$VERSION` in `manifest.yaml` is replaced by the
//! version, which is also the image tag). The binaries are stand-ins: small shell scripts that say
//! so and exit 1.

use crate::oci::{Layer, LayerBuilder};
use anyhow::Result;

/// One stand-in extension.
pub struct Extension {
    /// `metadata.name` and the repository's last component (`spin`).
    pub name: &'static str,
    /// `metadata.version` and the image tag (`v0.19.0`).
    pub version: &'static str,
    /// `metadata.author`.
    pub author: &'static str,
    /// `metadata.description` (one line; written as a YAML block scalar like upstream).
    pub description: &'static str,
    /// `metadata.compatibility.talos.version`.
    pub talos_compat: &'static str,
}

/// `siderolabs/spin:v0.19.0`.
pub const SPIN: Extension = Extension {
    name: "spin",
    version: "v0.19.0",
    author: "Sven Pfennig",
    description: "This system extension provides support for spin runtime (WebAssembly) containers.",
    talos_compat: ">= v1.0.0",
};

/// `siderolabs/tailscale:1.84.0`.
pub const TAILSCALE: Extension = Extension {
    name: "tailscale",
    version: "1.84.0",
    author: "Beau Trepp",
    description:
        "Tailscale connects your team's devices and development environments for easy access to remote resources.",
    talos_compat: ">= v1.5.0",
};

/// The CRI configuration part of the spin extension (`/etc/cri/conf.d/10-spin.part`).
pub const SPIN_CRI_PART: &str =
    "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.spin]\n  runtime_type = \"io.containerd.spin.v2\"\n";

/// The tailscale extension service spec (`/usr/local/etc/containers/tailscale.yaml`), as upstream.
pub const TAILSCALE_SERVICE_SPEC: &str = r#"name: tailscale
depends:
  - service: cri
  - network:
    - addresses
    - connectivity
    - etcfiles
  - configuration: true
container:
  entrypoint: /usr/local/bin/containerboot
  environment:
  - PATH=/sbin:/usr/local/bin
  - TS_SOCKET=/var/run/tailscale/tailscaled.sock
  - TS_STATE_DIR=/var/lib/tailscale
  - TS_USERSPACE=false
  security:
    writeableRootfs: false
    writeableSysfs: true
  mounts:
  # libs
  - source: /lib
    destination: /lib
    type: bind
    options:
      - bind
      - ro
  # more libs
  - source: /usr/lib
    destination: /usr/lib
    type: bind
    options:
      - bind
      - ro
  ## Required for tailscale. Ip addr and other commands
  - source: /sbin
    destination: /sbin
    type: bind
    options:
      - bind
      - ro
  ## Tailscale needs to write to this to create the interfaces
  - source: /dev/net/tun
    destination: /dev/net/tun
    type: bind
    options:
      - bind
      - rw
  ## Tailscale socket
  - source: /var/run/tailscale
    destination: /var/run/tailscale
    type: bind
    options:
      - bind
      - rw
  ## Tailscale state. Particularly its 'auth' state
  - source: /var/lib/tailscale
    destination: /var/lib/tailscale
    type: bind
    options:
      - bind
      - rw
  - source: /etc/ssl/certs
    destination: /etc/ssl/certs
    type: bind
    options:
      - rbind
      - ro
restart: always
"#;

impl Extension {
    /// `manifest.yaml` as the upstream build writes it.
    pub fn manifest_yaml(&self) -> String {
        format!(
            "version: v1alpha1\nmetadata:\n  name: {}\n  version: \"{}\"\n  author: {}\n  description: |\n    {}\n  compatibility:\n    talos:\n      version: \"{}\"\n",
            self.name, self.version, self.author, self.description, self.talos_compat
        )
    }

    /// Upstream reference this image stands in for.
    pub fn upstream_reference(&self) -> String {
        format!("ghcr.io/siderolabs/{}:{}", self.name, self.version)
    }

    /// The single layer of this extension's image for `arch` (GOARCH spelling), with stand-in
    /// scripts for the binaries.
    pub fn layer(&self, arch: &str, mtime: u64) -> Result<Layer> {
        self.layer_with(arch, mtime, "", &mut |bin| Ok(standin_script(bin, self, arch).into_bytes()))
    }

    /// The binaries' names (the files under `rootfs/` that upstream builds).
    pub fn binaries(&self) -> &'static [&'static str] {
        match self.name {
            "spin" => &["containerd-shim-spin-v2"],
            "tailscale" => &["containerboot", "tailscale", "tailscaled"],
            _ => &[],
        }
    }

    /// The single layer for `arch` with each binary's bytes from `binary(name)` (the layout and
    /// the other files are those of [`Extension::layer`]); `note` is added to the layer comment.
    pub fn layer_with(
        &self,
        arch: &str,
        mtime: u64,
        note: &str,
        binary: &mut dyn FnMut(&str) -> Result<Vec<u8>>,
    ) -> Result<Layer> {
        let mut b = LayerBuilder::new(mtime);
        b.file("manifest.yaml", self.manifest_yaml(), 0o644);
        match self.name {
            "spin" => {
                b.file("rootfs/usr/local/bin/containerd-shim-spin-v2", binary("containerd-shim-spin-v2")?, 0o755);
                b.file("rootfs/etc/cri/conf.d/10-spin.part", SPIN_CRI_PART, 0o644);
            }
            "tailscale" => {
                for bin in self.binaries() {
                    b.file(
                        &format!("rootfs/usr/local/lib/containers/tailscale/usr/local/bin/{bin}"),
                        binary(bin)?,
                        0o755,
                    );
                }
                b.file("rootfs/usr/local/etc/containers/tailscale.yaml", TAILSCALE_SERVICE_SPEC, 0o644);
            }
            other => anyhow::bail!("no stand-in content for extension {other}"),
        }
        b.build(&format!("moonboot stand-in of {} (linux/{arch}){note}, TEST FIXTURE", self.upstream_reference()))
    }
}

fn standin_script(bin: &str, ext: &Extension, arch: &str) -> String {
    format!(
        "#!/bin/sh\n# moonboot TEST FIXTURE: a stand-in for {bin} of the {name} {version} Talos system extension\n# (linux/{arch}). It is not the real program.\necho \"moonboot stand-in {bin} ({name} {version}, linux/{arch}): not the real program\" >&2\nexit 1\n",
        name = ext.name,
        version = ext.version,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn names(layer: &Layer) -> Vec<String> {
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&layer.blob[..]).read_to_end(&mut tar).unwrap();
        let mut ar = tar::Archive::new(&tar[..]);
        ar.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn manifest_yaml_shape() {
        let y = SPIN.manifest_yaml();
        assert!(y.starts_with("version: v1alpha1\nmetadata:\n  name: spin\n  version: \"v0.19.0\"\n"));
        assert!(y.contains("  compatibility:\n    talos:\n      version: \">= v1.0.0\"\n"));
    }

    #[test]
    fn layers_hold_only_manifest_and_rootfs() {
        for ext in [&SPIN, &TAILSCALE] {
            let l = ext.layer("arm64", 0).unwrap();
            for n in names(&l) {
                assert!(n == "manifest.yaml" || n.starts_with("rootfs/"), "{n}");
            }
        }
        let spin = names(&SPIN.layer("amd64", 0).unwrap());
        assert!(spin.contains(&"rootfs/usr/local/bin/containerd-shim-spin-v2".to_string()));
        assert!(spin.contains(&"rootfs/etc/cri/conf.d/10-spin.part".to_string()));
        let ts = names(&TAILSCALE.layer("amd64", 0).unwrap());
        assert!(ts.contains(&"rootfs/usr/local/etc/containers/tailscale.yaml".to_string()));
        assert!(ts.contains(&"rootfs/usr/local/lib/containers/tailscale/usr/local/bin/containerboot".to_string()));
        // Per-arch stand-ins differ, so each platform has its own layer.
        assert_ne!(TAILSCALE.layer("amd64", 0).unwrap().blob, TAILSCALE.layer("arm64", 0).unwrap().blob);
    }
}
