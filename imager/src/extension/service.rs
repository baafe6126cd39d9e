//! Extension service specs (`/usr/local/etc/containers/<name>.yaml`).
//!
//! Shape and rules from talos v1.10.5 `pkg/machinery/extensions/services/services.go`: `name`
//! matches `^[-_a-z0-9]{1,}$`; `restart` is `always`, `never` or `untilSuccess`
//! (`restart_kind.go`); `container.entrypoint` is required; each `depends` entry sets exactly one
//! of `service`, `path` (absolute), `network` (`addresses`, `connectivity`, `hostname`,
//! `etcfiles`: `nethelpers.Status`), `time`, `configuration`. The service runs as `ext-<name>`
//! with its rootfs at `/usr/local/lib/containers/<name>/`.

use serde::Deserialize;

/// A parsed extension service spec (the fields moonboot checks; others are ignored as Talos's
/// decoder ignores unknown ones).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service name; the service is `ext-<name>`.
    pub name: String,
    /// The container to run.
    pub container: Container,
    /// Start conditions, each with exactly one kind set.
    #[serde(default)]
    pub depends: Vec<Dependency>,
    /// `always`, `never` or `untilSuccess`.
    pub restart: String,
    /// Copy the service's output to the kernel console.
    #[serde(default)]
    pub log_to_console: bool,
}

/// `container` of a service spec.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// Entrypoint, relative to the container rootfs.
    pub entrypoint: String,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// `KEY=value` environment entries.
    #[serde(default)]
    pub environment: Vec<String>,
    /// Mounts, OCI runtime-spec `specs.Mount` decoded by Talos's YAML decoder (lower-cased
    /// field names). Talos validates none of them (`services.go` `Validate`); it creates a
    /// missing `source` as a directory before starting the service (`extension.go` `Runner`).
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Security options.
    #[serde(default)]
    pub security: Security,
}

/// One `container.mounts` entry (OCI runtime-spec `config.md` "Mounts").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Mount {
    /// Host path (for `bind`).
    #[serde(default)]
    pub source: String,
    /// Path in the container.
    pub destination: String,
    /// `bind`, or a file system type.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Mount options (`bind`, `rbind`, `ro`, `nosuid`, …).
    #[serde(default)]
    pub options: Vec<String>,
}

/// `container.security`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Security {
    /// `/sys` writable in the container.
    #[serde(default)]
    pub writeable_sysfs: bool,
    /// Rootfs writable.
    #[serde(default)]
    pub writeable_rootfs: bool,
}

/// One `depends` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Dependency {
    /// Another service running.
    #[serde(default)]
    pub service: Option<String>,
    /// A path existing (absolute).
    #[serde(default)]
    pub path: Option<String>,
    /// Network readiness: `addresses`, `connectivity`, `hostname`, `etcfiles`.
    #[serde(default)]
    pub network: Vec<String>,
    /// Time synchronised.
    #[serde(default)]
    pub time: bool,
    /// Machine configuration present.
    #[serde(default)]
    pub configuration: bool,
}

/// Why a service spec was refused.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Not valid YAML or a field of the wrong type.
    #[error("{file}: {reason}")]
    Yaml {
        /// The spec's file name.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// A rule of `services.go` is broken.
    #[error("{file}: {field}: {reason}")]
    Invalid {
        /// The spec's file name.
        file: String,
        /// The field (`name`, `restart`, `depends[1]`, …).
        field: String,
        /// What is wrong.
        reason: String,
    },
}

const NETWORK_STATUSES: &[&str] = &["addresses", "connectivity", "hostname", "etcfiles"];

impl ServiceSpec {
    /// Parses and validates a spec; `file` names it in errors.
    ///
    /// # Errors
    /// [`ServiceError`] naming the file and field.
    pub fn parse(file: &str, yaml: &str) -> Result<ServiceSpec, ServiceError> {
        let spec: ServiceSpec =
            crate::yaml::from_str(yaml).map_err(|reason| ServiceError::Yaml { file: file.to_string(), reason })?;
        let invalid = |field: String, reason: String| ServiceError::Invalid { file: file.to_string(), field, reason };
        if spec.name.is_empty()
            || !spec.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(invalid("name".into(), format!("name {:?} is invalid", spec.name)));
        }
        if !["always", "never", "untilSuccess"].contains(&spec.restart.as_str()) {
            return Err(invalid("restart".into(), format!("restart kind is invalid: {}", spec.restart)));
        }
        if spec.container.entrypoint.is_empty() {
            return Err(invalid("container.entrypoint".into(), "container endpoint can't be empty".into()));
        }
        for (i, d) in spec.depends.iter().enumerate() {
            let field = format!("depends[{i}]");
            let set = [d.service.is_some(), d.path.is_some(), !d.network.is_empty(), d.time, d.configuration];
            match set.iter().filter(|x| **x).count() {
                0 => return Err(invalid(field, "no dependency specified".into())),
                1 => {}
                _ => return Err(invalid(field, "more than a single dependency is set".into())),
            }
            if let Some(p) = &d.path {
                if !p.starts_with('/') {
                    return Err(invalid(field, format!("path is not absolute: {p:?}")));
                }
            }
            if let Some(bad) = d.network.iter().find(|s| !NETWORK_STATUSES.contains(&s.as_str())) {
                return Err(invalid(field, format!("invalid network dependency: {bad}")));
            }
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT_SPEC: &str = include_str!("../../../extensions/talos-agent/talos-agent.yaml");
    const AGENT_MANIFEST: &str = include_str!("../../../extensions/talos-agent/manifest.yaml");

    /// The in-repo talos-agent extension keeps the contract of ARCHITECTURE.md: it depends only
    /// on network addresses (so it runs in maintenance mode), restarts always, logs to console,
    /// and its manifest version follows the agent crate.
    #[test]
    fn talos_agent_extension_keeps_its_contract() {
        let spec = ServiceSpec::parse("talos-agent.yaml", AGENT_SPEC).unwrap();
        assert_eq!(spec.name, "talos-agent");
        assert_eq!(spec.depends, vec![Dependency { network: vec!["addresses".into()], ..Default::default() }]);
        assert_eq!(spec.restart, "always");
        assert!(spec.log_to_console);
        assert_eq!(spec.container.entrypoint, "/usr/local/bin/talos-agent");
        assert_eq!(spec.container.args, vec!["report"]);
        assert!(!spec.container.security.writeable_rootfs && !spec.container.security.writeable_sysfs);
        // Every mount is a read-only, non-recursive bind of a path that exists on every Talos
        // node (Talos would create a missing source as a directory). The published spec has no
        // /dev: only board images get it (for the boot disk's MBR, talos_agent.mbr=repair), as
        // their first mount, without suid or exec.
        let board = crate::build::agent_extension::board_spec(AGENT_SPEC).unwrap();
        let board = ServiceSpec::parse("talos-agent.yaml", &board).unwrap();
        let mounts = |s: &ServiceSpec| -> Vec<(String, String)> {
            s.container.mounts.iter().map(|m| (m.source.clone(), m.destination.clone())).collect()
        };
        let files = [("/etc/extensions.yaml", "/etc/extensions.yaml"), ("/etc/os-release", "/etc/os-release")]
            .map(|(a, b)| (a.to_string(), b.to_string()));
        assert_eq!(mounts(&spec), files);
        assert_eq!(mounts(&board)[0], ("/dev".to_string(), "/dev".to_string()));
        assert_eq!(mounts(&board)[1..], files);
        for m in spec.container.mounts.iter().chain(&board.container.mounts) {
            assert_eq!(m.kind, "bind", "{m:?}");
            let o = |x: &str| m.options.iter().any(|y| y == x);
            assert!(o("bind") && o("ro") && !o("rbind") && !o("rw"), "{m:?}");
        }
        let dev = &board.container.mounts[0];
        assert!(dev.options.iter().any(|o| o == "nosuid") && dev.options.iter().any(|o| o == "noexec"), "{dev:?}");
        // The board spec is the published one with that mount and nothing else changed.
        let mut without = board.clone();
        without.container.mounts.remove(0);
        assert_eq!(without, spec);
        // A spec that already mounts /dev is kept as it is; one without a mounts list is refused.
        let once = crate::build::agent_extension::board_spec(AGENT_SPEC).unwrap();
        assert_eq!(crate::build::agent_extension::board_spec(&once).unwrap(), once);
        let no_mounts = AGENT_SPEC.replace("\n  mounts:\n", "\n  volumes:\n");
        assert!(crate::build::agent_extension::board_spec(&no_mounts).is_err());

        let manifest = crate::extension::Manifest::parse(AGENT_MANIFEST).unwrap();
        assert_eq!(manifest.metadata.name, spec.name);
        assert_eq!(manifest.metadata.version, format!("v{}", env!("CARGO_PKG_VERSION")));
        manifest.check_compatible(&semver::Version::new(1, 10, 5)).unwrap();
    }

    /// siderolabs/extensions `network/tailscale/tailscale.yaml` (abridged) parses and validates.
    #[test]
    fn upstream_tailscale_spec() {
        let yaml = "name: tailscale\ndepends:\n  - service: cri\n  - network:\n    - addresses\n    - connectivity\n    - etcfiles\n  - configuration: true\ncontainer:\n  entrypoint: /usr/local/bin/containerboot\n  environment:\n  - PATH=/sbin:/usr/local/bin\n  security:\n    writeableRootfs: false\n    writeableSysfs: true\nrestart: always\n";
        let spec = ServiceSpec::parse("tailscale.yaml", yaml).unwrap();
        assert_eq!(spec.depends.len(), 3);
        assert!(spec.depends[2].configuration);
    }

    #[test]
    fn refuses_what_talos_refuses() {
        let base = AGENT_SPEC;
        for (yaml, want) in [
            (base.replace("name: talos-agent", "name: Talos"), "talos-agent.yaml: name: name \"Talos\" is invalid"),
            (
                base.replace("restart: always", "restart: sometimes"),
                "talos-agent.yaml: restart: restart kind is invalid: sometimes",
            ),
            (
                base.replace("      - addresses", "      - carrier"),
                "talos-agent.yaml: depends[0]: invalid network dependency: carrier",
            ),
            (
                base.replace("  - network:\n      - addresses", "  - time: true\n    service: cri"),
                "talos-agent.yaml: depends[0]: more than a single dependency is set",
            ),
            (
                base.replace("  - network:\n      - addresses", "  - path: relative/x"),
                "talos-agent.yaml: depends[0]: path is not absolute: \"relative/x\"",
            ),
            (
                base.replace("entrypoint: /usr/local/bin/talos-agent", "entrypoint: \"\""),
                "talos-agent.yaml: container.entrypoint: container endpoint can't be empty",
            ),
        ] {
            assert_eq!(ServiceSpec::parse("talos-agent.yaml", &yaml).unwrap_err().to_string(), want);
        }
    }
}
