//! The `embedded-config` extension: a machine configuration built into the image, which Talos
//! ≥ 1.12 reads at boot from `/usr/local/etc/talos/config.yaml` instead of waiting in maintenance
//! mode for `talosctl apply-config` (Image Factory's `customization.embeddedMachineConfiguration`).
//!
//! Made as Talos's imager makes it (talos `pkg/imager/embed.go`, v1.12.11–v1.14.0-rc.1):
//! - `manifest.yaml`: `name: embedded-config`, `version:` the hex SHA-256 of the configuration,
//!   `author: Imager`, `description: Virtual extension which embeds the machine configuration.`,
//!   `compatibility.talos.version: '>= 1.0.0'`, written as `go.yaml.in/yaml/v4` `Marshal` writes
//!   the `extensions.Manifest` struct (`pkg/machinery/extensions/metadata.go`);
//! - `rootfs/usr/local/etc/talos/config.yaml` (`constants.EmbeddedConfigDirectory`,
//!   `constants.ConfigFilename`): mode 0400 from Talos 1.13, 0000 at 1.12
//!   ([`Quirk::EmbeddedConfigMode0400`]), directories 0755;
//! - appended after every other extension (`Execute`: `handleEmbeddedConfig` runs last).
//!
//! - the file labelled `system_u:object_r:system_state_t:s0` (a PAX
//!   `SCHILY.xattr.security.selinux` record, [`SELINUX_LABEL`]), which reaches the squashfs as the
//!   file's `security.selinux` extended attribute (see `squashfs.rs`).

use kernel_cmdline::preset::TalosVersion;
use kernel_cmdline::quirks::{Quirk, Quirks};

use crate::extension::tree::{Entry, Kind, Tree};

/// `metadata.name` of the extension.
pub const NAME: &str = "embedded-config";
/// Where the configuration is, inside the extension (talos `constants.EmbeddedConfigDirectory`
/// `/usr/local/etc/talos/` + `constants.ConfigFilename`).
pub const CONFIG_PATH: &str = "rootfs/usr/local/etc/talos/config.yaml";
/// The SELinux label Talos gives the file (talos `constants.StateSelinuxLabel`).
pub const SELINUX_LABEL: &str = "system_u:object_r:system_state_t:s0";

/// The file's mode at Talos `talos` (`embed.go`: `0o000` at v1.12.11, `0o400` from v1.13.0).
pub fn config_mode(talos: TalosVersion) -> u32 {
    if Quirks::new(talos).has(Quirk::EmbeddedConfigMode0400) {
        0o400
    } else {
        0o000
    }
}

/// The extension's `manifest.yaml` for `config`, byte for byte what Talos's imager writes.
pub fn manifest(config: &[u8]) -> String {
    let version = boot_artifact::digest::Sha256Digest::of(config).hex();
    format!(
        "version: v1alpha1\nmetadata:\n    name: {NAME}\n    version: {version}\n    author: Imager\n    \
         description: Virtual extension which embeds the machine configuration.\n    compatibility:\n        \
         talos:\n            version: '>= 1.0.0'\n"
    )
}

/// The extension as a flattened tree (`manifest.yaml`, `rootfs/…/config.yaml` and its
/// directories), ready for the same validation as every pulled extension.
pub fn tree(config: &[u8], talos: TalosVersion) -> Tree {
    let mut t = Tree::new();
    t.insert(
        "manifest.yaml",
        Entry { mode: 0o644, kind: Kind::File(manifest(config).into_bytes()), selinux_label: None },
    );
    for dir in ["rootfs", "rootfs/usr", "rootfs/usr/local", "rootfs/usr/local/etc", "rootfs/usr/local/etc/talos"] {
        t.insert(dir, Entry { mode: 0o755, kind: Kind::Dir, selinux_label: None });
    }
    t.insert(
        CONFIG_PATH,
        Entry {
            mode: config_mode(talos),
            kind: Kind::File(config.to_vec()),
            selinux_label: Some(SELINUX_LABEL.to_string()),
        },
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed with go.yaml.in/yaml/v4 v4.0.0-rc.6 `Marshal` of talos v1.14.0-rc.1 `embed.go`'s
    /// manifest (struct tags of `pkg/machinery/extensions/metadata.go`) for this configuration.
    #[test]
    fn the_manifest_is_what_talos_writes() {
        let config = b"version: v1alpha1\nmachine:\n  type: worker\n";
        assert_eq!(
            manifest(config),
            "version: v1alpha1\nmetadata:\n    name: embedded-config\n    version: \
             041d0750e7e5ef7eae375f8929aad6ee0ace5a4288b8f92a6cc8fcc3ed01a5b7\n    author: Imager\n    \
             description: Virtual extension which embeds the machine configuration.\n    compatibility:\n        \
             talos:\n            version: '>= 1.0.0'\n"
        );
        let m = crate::extension::Manifest::parse(&manifest(config)).unwrap();
        assert_eq!((m.metadata.name.as_str(), m.metadata.author.as_str()), (NAME, "Imager"));
    }

    /// talos v1.14.0-rc.1 `embed_test.go` `TestBuildEmbeddedConfigExtension`: these entries.
    #[test]
    fn the_tree_holds_the_entries_of_talos_embed_test() {
        let t = tree(b"machine: {}\n", "1.13.0".parse().unwrap());
        let names: Vec<&str> = t.entries().map(|(p, _)| p).collect();
        assert_eq!(
            names,
            [
                "manifest.yaml",
                "rootfs",
                "rootfs/usr",
                "rootfs/usr/local",
                "rootfs/usr/local/etc",
                "rootfs/usr/local/etc/talos",
                "rootfs/usr/local/etc/talos/config.yaml"
            ]
        );
        assert_eq!(t.get(CONFIG_PATH).unwrap().mode, 0o400);
        assert_eq!(config_mode("1.12.11".parse().unwrap()), 0o000);
        assert_eq!(config_mode("1.14.0".parse().unwrap()), 0o400);
    }
}
