//! Image Factory schematics and their IDs.
//!
//! A schematic describes a customised Talos image: an owner, an optional board overlay and
//! customizations (an embedded machine configuration, extra kernel arguments, META values,
//! official system extensions, the bootloader, Secure Boot options, the disk image's sector
//! size). Its ID is the lowercase hex sha256 of the schematic marshalled by the factory's YAML
//! library (`siderolabs/image-factory` v1.5.0 `pkg/schematic/schematic.go` `ID()`/`Marshal()`:
//! `go.yaml.in/yaml/v4` `Marshal`, yaml.v3's defaults with unlimited line width; gopkg.in/yaml.v3
//! before v0.9.0, which writes the same bytes for everything encoded here): fields in struct order,
//! `omitempty` fields dropped when zero, 4-space indentation with sequences indented under their
//! key, no sorting of lists, one trailing newline. `customization: {}` hashes to
//! `376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba`.
//!
//! Field order (image-factory v1.5.0, `Customization`'s "field order is part of the stable
//! schematic serialization"): `owner`, `overlay{image, name, options}`, `customization{
//! embeddedMachineConfiguration, extraKernelArgs, meta[{key, value}], systemExtensions{
//! officialExtensions}, bootloader, secureboot{enrollKeys, includeWellKnownCertificates},
//! diskImage{sectorSize}}`. Unknown fields are refused, as the factory refuses them
//! (`KnownFields(true)`).
//!
//! Scalars are written as the YAML library writes them: plain when safe, double-quoted when the
//! string would read as null, bool, number or timestamp, single-quoted when it starts with an
//! indicator or holds `: ` or ` #`, and a multi-line string (the embedded machine configuration)
//! as a literal block (`|`, `|-` or `|+` by its trailing line breaks, `|4` when it starts with a
//! space; yaml v4 `internal/libyaml/emitter.go` `writeLiteralScalar`). Strings whose encoding
//! changed between the factory's YAML library versions (YAML 1.1 bools such as `yes`/`off`,
//! base-60 numbers such as `1:20`, `<<`, a block that starts with a line break), strings the
//! library writes double-quoted across lines (a space before a line break or at the end), and
//! non-printable characters are refused: their ID depends on the factory build, or this encoder
//! does not write them.

use std::fmt::Write as _;

use boot_artifact::digest::Sha256Digest;
use serde::Deserialize;

/// A schematic as the factory accepts it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schematic {
    /// The owner (`owner,omitempty`; Image Factory Enterprise only, image-factory v1.4.0+).
    #[serde(default)]
    pub owner: String,
    /// The board overlay (`overlay,omitempty`).
    #[serde(default)]
    pub overlay: Overlay,
    /// Customizations (`customization`, always written).
    #[serde(default)]
    pub customization: Customization,
}

/// `overlay`: `image` and `name` are always written once the overlay is non-zero.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    /// Overlay image without registry or tag (`siderolabs/sbc-raspberrypi`).
    #[serde(default)]
    pub image: String,
    /// Overlay name (`rpi_generic`).
    #[serde(default)]
    pub name: String,
    /// Overlay options (`options,omitempty`): string, integer or boolean values.
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, OptionValue>,
}

/// A value of `overlay.options`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OptionValue {
    /// `true`/`false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A string.
    Str(String),
}

/// `customization`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Customization {
    /// A Talos machine configuration embedded in the image (`embeddedMachineConfiguration,
    /// omitempty`; image-factory v1.3.3+, Talos 1.12+).
    #[serde(default)]
    pub embedded_machine_configuration: String,
    /// Extra kernel arguments, one per entry (`extraKernelArgs,omitempty`).
    #[serde(default)]
    pub extra_kernel_args: Vec<String>,
    /// META partition values (`meta,omitempty`).
    #[serde(default)]
    pub meta: Vec<MetaValue>,
    /// System extensions (`systemExtensions,omitempty`).
    #[serde(default)]
    pub system_extensions: SystemExtensions,
    /// The bootloader (`bootloader,omitempty`; image-factory v0.9.0+): `none` is the zero value
    /// and is not written.
    #[serde(default)]
    pub bootloader: Bootloader,
    /// Secure Boot options (`secureboot,omitempty`).
    #[serde(default)]
    pub secureboot: SecureBoot,
    /// Disk image options (`diskImage,omitempty`; image-factory v1.3.3+).
    #[serde(default)]
    pub disk_image: DiskImage,
}

/// `customization.bootloader`: talos `pkg/machinery/imager/imageropts/imageropts.go`
/// `BootloaderKind`, marshalled as its text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Bootloader {
    /// `none`: the image's default (the zero value, omitted).
    #[default]
    #[serde(rename = "none")]
    None,
    /// `dual-boot`: GRUB for BIOS and systemd-boot for UEFI.
    #[serde(rename = "dual-boot")]
    DualBoot,
    /// `sd-boot`: systemd-boot.
    #[serde(rename = "sd-boot")]
    SdBoot,
    /// `grub`.
    #[serde(rename = "grub")]
    Grub,
}

impl Bootloader {
    /// The text the factory writes, `None` for the omitted zero value.
    fn text(self) -> Option<&'static str> {
        match self {
            Bootloader::None => None,
            Bootloader::DualBoot => Some("dual-boot"),
            Bootloader::SdBoot => Some("sd-boot"),
            Bootloader::Grub => Some("grub"),
        }
    }
}

/// `customization.diskImage`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DiskImage {
    /// The disk image's logical sector size in bytes (`sectorSize,omitempty`; 0 = the default).
    #[serde(default)]
    pub sector_size: u32,
}

/// One META value: a key (0–255) and its value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaValue {
    /// META key (`uint8` upstream).
    pub key: u8,
    /// The value.
    pub value: String,
}

/// `customization.systemExtensions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SystemExtensions {
    /// Official extension names, `siderolabs/<name>`, in the order given (not sorted).
    #[serde(default)]
    pub official_extensions: Vec<String>,
}

/// `customization.secureboot`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecureBoot {
    /// When systemd-boot enrolls the Secure Boot keys (`enrollKeys,omitempty`; image-factory
    /// v1.4.0+): `off`, `manual`, `if-safe` (the factory's default) or `force`. `off` is refused
    /// by [`Schematic::marshal`]: the factory's YAML library versions quote it differently.
    #[serde(default)]
    pub enroll_keys: String,
    /// Include Microsoft's well-known UEFI certificates when enrolling keys.
    #[serde(default)]
    pub include_well_known_certificates: bool,
}

/// Why a schematic was refused.
#[derive(Debug, thiserror::Error)]
pub enum SchematicError {
    /// Not valid YAML, an unknown field, or a value of the wrong type.
    #[error("schematic: {0}")]
    Yaml(String),
    /// A string whose encoding (and so the ID) differs between factory builds, or that this
    /// encoder does not write.
    #[error("schematic: {field}: {value:?} cannot be encoded reproducibly ({reason})")]
    Unencodable {
        /// The field holding it.
        field: String,
        /// The value.
        value: String,
        /// Why.
        reason: &'static str,
    },
}

impl Schematic {
    /// Parses a schematic (YAML or JSON). An empty document or `customization:` with no value is
    /// the empty schematic.
    ///
    /// # Errors
    /// [`SchematicError::Yaml`] naming the field and line.
    pub fn parse(text: &str) -> Result<Schematic, SchematicError> {
        if text.trim().is_empty() {
            return Ok(Schematic::default());
        }
        let parsed: Option<Schematic> = crate::yaml::from_str(text).map_err(SchematicError::Yaml)?;
        Ok(parsed.unwrap_or_default())
    }

    /// The canonical bytes the factory hashes (see the module docs).
    ///
    /// # Errors
    /// [`SchematicError::Unencodable`].
    pub fn marshal(&self) -> Result<String, SchematicError> {
        let mut out = String::new();
        if !self.owner.is_empty() {
            let _ = writeln!(out, "owner: {}", scalar("owner", &self.owner)?);
        }
        let o = &self.overlay;
        if !(o.image.is_empty() && o.name.is_empty() && o.options.is_empty()) {
            out.push_str("overlay:\n");
            let _ = writeln!(out, "    image: {}", scalar("overlay.image", &o.image)?);
            let _ = writeln!(out, "    name: {}", scalar("overlay.name", &o.name)?);
            if !o.options.is_empty() {
                out.push_str("    options:\n");
                let mut keys: Vec<&String> = o.options.keys().collect();
                keys.sort_by(|a, b| natural_cmp(a, b));
                for k in keys {
                    let field = format!("overlay.options.{k}");
                    let value = match &o.options[k] {
                        OptionValue::Bool(b) => b.to_string(),
                        OptionValue::Int(i) => i.to_string(),
                        OptionValue::Str(s) => scalar(&field, s)?,
                    };
                    let _ = writeln!(out, "        {}: {value}", scalar(&field, k)?);
                }
            }
        }
        let c = &self.customization;
        let mut body = String::new();
        if !c.embedded_machine_configuration.is_empty() {
            let field = "customization.embeddedMachineConfiguration";
            let value = &c.embedded_machine_configuration;
            if value.contains('\n') {
                let _ = write!(body, "    embeddedMachineConfiguration: {}", literal_block(field, value, 8)?);
            } else {
                let _ = writeln!(body, "    embeddedMachineConfiguration: {}", scalar(field, value)?);
            }
        }
        if !c.extra_kernel_args.is_empty() {
            body.push_str("    extraKernelArgs:\n");
            for (i, a) in c.extra_kernel_args.iter().enumerate() {
                let _ = writeln!(body, "        - {}", scalar(&format!("customization.extraKernelArgs[{i}]"), a)?);
            }
        }
        if !c.meta.is_empty() {
            body.push_str("    meta:\n");
            for (i, m) in c.meta.iter().enumerate() {
                let v = scalar(&format!("customization.meta[{i}].value"), &m.value)?;
                let _ = write!(body, "        - key: {}\n          value: {v}\n", m.key);
            }
        }
        let exts = &c.system_extensions.official_extensions;
        if !exts.is_empty() {
            body.push_str("    systemExtensions:\n        officialExtensions:\n");
            for (i, e) in exts.iter().enumerate() {
                let _ = writeln!(
                    body,
                    "            - {}",
                    scalar(&format!("customization.systemExtensions.officialExtensions[{i}]"), e)?
                );
            }
        }
        if let Some(b) = c.bootloader.text() {
            let _ = writeln!(body, "    bootloader: {b}");
        }
        let sb = &c.secureboot;
        if !sb.enroll_keys.is_empty() || sb.include_well_known_certificates {
            body.push_str("    secureboot:\n");
            if !sb.enroll_keys.is_empty() {
                if !matches!(sb.enroll_keys.as_str(), "manual" | "if-safe" | "force") {
                    return Err(SchematicError::Unencodable {
                        field: "customization.secureboot.enrollKeys".into(),
                        value: sb.enroll_keys.clone(),
                        reason: "expected manual, if-safe or force (off is quoted differently by the factory's YAML library versions)",
                    });
                }
                let _ = writeln!(body, "        enrollKeys: {}", sb.enroll_keys);
            }
            if sb.include_well_known_certificates {
                body.push_str("        includeWellKnownCertificates: true\n");
            }
        }
        if c.disk_image.sector_size != 0 {
            let _ = write!(body, "    diskImage:\n        sectorSize: {}\n", c.disk_image.sector_size);
        }
        if body.is_empty() {
            out.push_str("customization: {}\n");
        } else {
            out.push_str("customization:\n");
            out.push_str(&body);
        }
        Ok(out)
    }

    /// The schematic ID: lowercase hex sha256 of [`Schematic::marshal`].
    ///
    /// # Errors
    /// As [`Schematic::marshal`].
    pub fn id(&self) -> Result<String, SchematicError> {
        Ok(Sha256Digest::of(self.marshal()?.as_bytes()).hex())
    }
}

/// Writes a multi-line string as the literal block scalar the factory's YAML library writes after
/// `key: ` (go-yaml v4 `internal/libyaml/emitter.go` `writeLiteralScalar`, `writeBlockScalarHints`,
/// `analyzeScalar`; `internal/libyaml/node.go` `shouldUseLiteralStyle`): `|`, then `4` when the
/// string starts with a space, then `-` without a trailing line break or `+` with two or more;
/// each line indented by `indent` spaces, empty lines left empty. Returns the text from the `|`
/// to the line break that ends the block.
///
/// # Errors
/// [`SchematicError::Unencodable`] for what the library writes otherwise, or differently between
/// its versions: a string that starts with a line break, has no visible character, holds a space
/// before a line break or at its end (written double-quoted), or any control character but tab
/// and `\n`, `\u{2028}`, `\u{2029}` or a character outside the BMP.
pub(crate) fn literal_block(field: &str, s: &str, indent: usize) -> Result<String, SchematicError> {
    let refuse = |reason| Err(SchematicError::Unencodable { field: field.to_string(), value: s.to_string(), reason });
    if s.starts_with('\n') {
        return refuse(
            "a block starting with a line break is written differently by the factory's YAML library versions",
        );
    }
    if s.chars().all(char::is_whitespace) {
        return refuse("a multi-line string without a visible character is written double-quoted");
    }
    if s.ends_with(' ') || s.contains(" \n") {
        return refuse("a space before a line break or at the end makes the YAML library write it double-quoted");
    }
    if s.chars().any(|c| {
        (c.is_control() && c != '\t' && c != '\n')
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
            || (c as u32) > 0xffff
    }) {
        return refuse("control, line-separator or non-BMP characters are not supported");
    }
    let mut out = String::from("|");
    if s.starts_with(' ') {
        out.push('4');
    }
    if !s.ends_with('\n') {
        out.push('-');
    } else if s.ends_with("\n\n") {
        out.push('+');
    }
    out.push('\n');
    let pad = " ".repeat(indent);
    let mut lines = s.split('\n').peekable();
    while let Some(line) = lines.next() {
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
        if lines.peek().is_some() {
            out.push('\n');
        }
    }
    if !s.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// Writes one single-line string scalar as yaml.v3 v3.0.1 does (`encode.go` `stringv`,
/// `emitterc.go` `yaml_emitter_analyze_scalar`), or refuses it.
pub(crate) fn scalar(field: &str, s: &str) -> Result<String, SchematicError> {
    let refuse = |reason| Err(SchematicError::Unencodable { field: field.to_string(), value: s.to_string(), reason });
    if s.contains(['\n', '\r']) {
        return refuse("multi-line strings are not supported");
    }
    if s.chars().any(|c| c.is_control() || (c as u32) > 0xffff || c == '\u{feff}') {
        return refuse("control or non-BMP characters are not supported");
    }
    if is_old_bool(s) || is_base60(s) || s == "<<" {
        return refuse("its quoting differs between the factory's YAML library versions");
    }
    if resolves_to_non_string(s) {
        return Ok(format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")));
    }
    if needs_single_quotes(s) {
        return Ok(format!("'{}'", s.replace('\'', "''")));
    }
    Ok(s.to_string())
}

/// YAML 1.1 booleans (yaml.v3 `resolve.go` `isOldBool`).
fn is_old_bool(s: &str) -> bool {
    matches!(
        s,
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF"
    )
}

/// `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$` (yaml.v3 `isBase60Float`).
fn is_base60(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (main, frac) = match s.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (s, None),
    };
    if frac.is_some_and(|f| !f.bytes().all(|b| b.is_ascii_digit() || b == b'_')) {
        return false;
    }
    let mut parts = main.split(':');
    let head = parts.next().unwrap_or("");
    if !head.starts_with(|c: char| c.is_ascii_digit()) || !head.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        return false;
    }
    let rest: Vec<&str> = parts.collect();
    !rest.is_empty()
        && rest.iter().all(|p| {
            let b = p.as_bytes();
            match b.len() {
                1 => b[0].is_ascii_digit(),
                2 => (b'0'..=b'5').contains(&b[0]) && b[1].is_ascii_digit(),
                _ => false,
            }
        })
}

/// True when yaml.v3's resolver reads `s` as null, bool, int, float or timestamp.
fn resolves_to_non_string(s: &str) -> bool {
    if matches!(s, "" | "~" | "null" | "Null" | "NULL" | "true" | "True" | "TRUE" | "false" | "False" | "FALSE") {
        return true;
    }
    if matches!(
        s,
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF" | ".nan" | ".NaN" | ".NAN"
    ) {
        return true;
    }
    let first = s.as_bytes()[0];
    if !(first.is_ascii_digit() || first == b'+' || first == b'-' || first == b'.') {
        return false;
    }
    is_go_int(&s.replace('_', "")) || is_yaml_float(s) || is_timestamp(s)
}

/// Go `strconv.ParseInt(s, 0, 64)` / `ParseUint` syntax: optional sign, then decimal, `0x`,
/// `0o`, `0b` or a leading-`0` octal prefix. Range overflow also counts (yaml.v3 then tries a
/// float, which matches any long digit run).
fn is_go_int(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (digits, radix) = if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        (h, 16)
    } else if let Some(o) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
        (o, 8)
    } else if let Some(b) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
        (b, 2)
    } else if body.len() > 1 && body.starts_with('0') {
        (&body[1..], 8)
    } else {
        (body, 10)
    };
    !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix))
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$` (yaml.v3 `yamlStyleFloat`).
fn is_yaml_float(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => digits(frac),
        Some((int, frac)) => digits(int) && (frac.is_empty() || digits(frac)),
        None => digits(mantissa),
    };
    let exp_ok = exp.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)));
    mantissa_ok && exp_ok
}

/// yaml.v3 `parseTimestamp`: `YYYY-M-D` optionally followed by `T`/`t`/space and a time. Any
/// string that starts `DDDD-D` and parses as one of Go's layouts; we treat every
/// `YYYY-M[M]-D[D]…` prefix as a timestamp, which errs on the side of quoting.
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let run = |i: &mut usize, max: usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() && *i - start < max {
            *i += 1;
        }
        *i - start
    };
    if run(&mut i, 4) != 4 || b.get(i) != Some(&b'-') {
        return false;
    }
    i += 1;
    if run(&mut i, 2) == 0 || b.get(i) != Some(&b'-') {
        return false;
    }
    i += 1;
    run(&mut i, 2) > 0 && (i == b.len() || matches!(b[i], b'T' | b't' | b' '))
}

/// When the emitter may not write `s` plain in block context (`yaml_emitter_analyze_scalar`).
fn needs_single_quotes(s: &str) -> bool {
    let b = s.as_bytes();
    let first = b[0];
    let followed_by_space = b.get(1).is_none_or(|c| *c == b' ');
    if b"#,[]{}&*!|>'\"%@`".contains(&first) {
        return true;
    }
    if b"?:-".contains(&first) && followed_by_space {
        return true;
    }
    if s.starts_with("---") || s.starts_with("...") {
        return true;
    }
    if s.starts_with(' ') || s.ends_with(' ') || s.ends_with(':') {
        return true;
    }
    s.contains(": ") || s.contains(" #")
}

/// yaml.v3 `sorter.go` `keyList.Less` for two string keys: a natural order in which digit runs
/// compare as numbers (an empty run counts as 0) and, at the first difference, a letter sorts
/// after a non-letter unless the previous, equal, character was a digit.
fn natural_less(a: &str, b: &str) -> bool {
    let (ar, br): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut digits = false;
    for i in 0..ar.len().min(br.len()) {
        if ar[i] == br[i] {
            digits = ar[i].is_numeric();
            continue;
        }
        let (al, bl) = (ar[i].is_alphabetic(), br[i].is_alphabetic());
        if al && bl {
            return ar[i] < br[i];
        }
        if al || bl {
            return if digits { al } else { bl };
        }
        let (mut an, mut bn) = (0i64, 0i64);
        if ar[i] == '0' || br[i] == '0' {
            // A zero after a non-zero digit of the same run is part of a larger number.
            if ar[..i].iter().rev().take_while(|c| c.is_numeric()).any(|c| *c != '0') {
                an = 1;
                bn = 1;
            }
        }
        let mut ai = i;
        while ai < ar.len() && ar[ai].is_ascii_digit() {
            an = an.wrapping_mul(10).wrapping_add(i64::from(ar[ai] as u8 - b'0'));
            ai += 1;
        }
        let mut bi = i;
        while bi < br.len() && br[bi].is_ascii_digit() {
            bn = bn.wrapping_mul(10).wrapping_add(i64::from(br[bi] as u8 - b'0'));
            bi += 1;
        }
        if an != bn {
            return an < bn;
        }
        if ai != bi {
            return ai < bi;
        }
        return ar[i] < br[i];
    }
    ar.len() < br.len()
}

fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    if natural_less(a, b) {
        std::cmp::Ordering::Less
    } else if natural_less(b, a) {
        std::cmp::Ordering::Greater
    } else {
        std::cmp::Ordering::Equal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(yaml: &str) -> String {
        Schematic::parse(yaml).unwrap().id().unwrap()
    }

    /// Vectors from siderolabs/image-factory v0.8.4 (`pkg/schematic/schematic_test.go`,
    /// `internal/integration/schematic_test.go`), image-factory `internal/profile/profile_test.go`
    /// and talos v1.11 docs (`boot-assets.md`, `image-factory.md`, `rpi_generic.md`).
    #[test]
    fn upstream_ids() {
        let cases = [
            ("customization: {}", "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"),
            ("{}", "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"),
            ("customization:\n", "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"),
            (r#"customization: {"extraKernelArgs": []}"#, "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"),
            (r#"{"customization": {"extraKernelArgs": ["noapic", "nolapic"], "systemExtensions": {}}}"#, "9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c"),
            (r#"{"customization": {"meta": [{"key": 10, "value": "foo"}], "extraKernelArgs": [], "systemExtensions": {}}}"#, "d308a2a5ee2277bed5fbaa104fcbc8d59122abfa737df987a95b4ca763459a7f"),
            ("overlay:\n  name: rpi_generic\n  image: siderolabs/sbc-raspberrypi\ncustomization: {}\n", "ee21ef4a5ef808a9b7484cc0dda0f25075021691c8c09a276591eedb638ea1f9"),
            ("customization:\n  secureboot:\n    includeWellKnownCertificates: true\n", "fa8e05f142a851d3ee568eb0a8e5841eaf6b0ebc8df9a63df16ac5ed2c04f3e6"),
            ("customization:\n  extraKernelArgs: [nolapic, nomodeset]\n", "e0fb1129bbbdfb5d002e94af4cdce712a8370e850950a33a242d4c3f178c532d"),
            ("customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/amd-ucode, siderolabs/gvisor, siderolabs/gasket-driver]\n", "51ff3e49313773332729a5c04e57af0dbe2e6d3f65ff638e6d4c3a05065fefff"),
            ("customization:\n  meta:\n    - key: 0xa\n      value: '{\"externalIPs\":[\"1.2.3.4\"]}'\n", "fe866116408a5a13dab7d5003eb57a00954ea81ebeec3fbbcd1a6d4462a00036"),
            ("customization:\n  extraKernelArgs:\n    - net.ifnames=0\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/gvisor\n      - siderolabs/intel-ucode\n", "b8e8fbbe1b520989e6c52c8dc8303070cb42095997e76e812fa8892393e1d176"),
            ("customization:\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/gvisor\n", "d9ff89777e246792e7642abd3220a616afb4e49822382e4213a2e528ab826fe5"),
            ("customization:\n  extraKernelArgs: [noapic, nolapic]\n  meta: [{key: 10, value: foo}]\n  systemExtensions:\n    officialExtensions: [siderolabs/amd-ucode, siderolabs/intel-ucode]\n", "6ba13d510dcc57f233b9b498d34a3c919c1abdd5675b46ad53cf4f2e66362f82"),
            ("overlay:\n  image: ghcr.io/siderolabs/sbc-raspberrypi:v0.1.0\n  name: rpi_generic\ncustomization:\n  extraKernelArgs: [noapic, nolapic]\n  systemExtensions:\n    officialExtensions: [siderolabs/amd-ucode, siderolabs/intel-ucode]\n", "1da25204d18e6db95cb65ce2e38424b2ad94b2519a53aef34e45f07cc73ca5e8"),
            ("customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/qemu-guest-agent]\n", "ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515"),
        ];
        for (yaml, want) in cases {
            assert_eq!(id(yaml), want, "{yaml}");
        }
    }

    /// Computed with the real gopkg.in/yaml.v3 v3.0.1 (and yaml v4 rc.3/4/6): the operator's
    /// Raspberry Pi image with Spin and Tailscale, and an overlay with an empty name.
    #[test]
    fn operator_schematic_and_empty_overlay_name() {
        let rpi = "overlay:\n  image: siderolabs/sbc-raspberrypi\n  name: rpi_generic\ncustomization:\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/spin\n      - siderolabs/tailscale\n";
        let s = Schematic::parse(rpi).unwrap();
        assert_eq!(s.marshal().unwrap(), "overlay:\n    image: siderolabs/sbc-raspberrypi\n    name: rpi_generic\ncustomization:\n    systemExtensions:\n        officialExtensions:\n            - siderolabs/spin\n            - siderolabs/tailscale\n");
        assert_eq!(s.id().unwrap(), "c0f06d3cffeec27089a195ee6942ee0e1911b8521d21d7e4afde5e023fbff114");
        assert_eq!(
            id("overlay:\n  image: siderolabs/sbc-raspberrypi\ncustomization:\n  extraKernelArgs:\n    - console=ttyS0,115200n8\n    - net.ifnames=0\n"),
            Sha256Digest::of(b"overlay:\n    image: siderolabs/sbc-raspberrypi\n    name: \"\"\ncustomization:\n    extraKernelArgs:\n        - console=ttyS0,115200n8\n        - net.ifnames=0\n").hex()
        );
        assert_eq!(
            id("overlay:\n  image: siderolabs/sbc-raspberrypi\n  name: rpi_generic\ncustomization:\n  extraKernelArgs:\n    - console=ttyS0,115200n8\n    - net.ifnames=0\n  systemExtensions:\n    officialExtensions: [siderolabs/tailscale, siderolabs/spin]\n"),
            "07a9d1e98918bc534a833e315dcd81232cb26909eda7be1227e369a9d7414aed"
        );
        assert_eq!(
            id("overlay:\n  image: siderolabs/sbc-raspberrypi\n"),
            "46300432c2b7a5e4c8bc4b445ade99619faadd1414cd6f4449a673a2164fecfc"
        );
    }

    /// The fields image-factory added since 2025. The first two IDs are `TestID` vectors of
    /// image-factory v1.5.0 `pkg/schematic/schematic_test.go` (`empty`, `4k sector disk image`);
    /// the others were computed with go.yaml.in/yaml/v4 v4.0.0-rc.6 `Marshal` (the library and
    /// release image-factory v1.5.0 builds with, to a later commit) of structs with the factory's
    /// field order and tags, which reproduces every `TestID` vector.
    #[test]
    fn fields_added_since_2025() {
        let cfg = "apiVersion: v1alpha1\nkind: HostnameConfig\nhostname: cm3-1\nauto: off\n";
        let with_config = |c: &str| Schematic {
            customization: Customization { embedded_machine_configuration: c.into(), ..Default::default() },
            ..Default::default()
        };
        let cases = [
            (Schematic::default(), "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"),
            (
                Schematic::parse("customization:\n  diskImage:\n    sectorSize: 4096\n").unwrap(),
                "92833e9ddd9bb9e11b2464fa5525429f01866306d52ebd882ee08d7918f6d1ea",
            ),
            (
                Schematic::parse("owner: acme\n").unwrap(),
                "1a015fb3fe95228a07e342e4406abb3f30ec5887b42895993ea7b1baa9a6a8f3",
            ),
            (
                Schematic::parse("customization:\n  bootloader: sd-boot\n").unwrap(),
                "9ed5fecdacb36b5c5427b87d409f1065cfb2df69b0f71c58b868d9d466d8dab3",
            ),
            (
                Schematic::parse("customization:\n  bootloader: grub\n").unwrap(),
                "39d496b2cbdb6265d3b714514c5334bf010f1b4d31b23b9e38c80fb2f3ad7ecb",
            ),
            (
                Schematic::parse("customization:\n  bootloader: dual-boot\n").unwrap(),
                "43a1a6104d8dcd6547983f4ed13abb6f5e8a1b2fdad796c69e7db6e95d122884",
            ),
            (
                Schematic::parse("customization:\n  bootloader: none\n").unwrap(),
                "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba",
            ),
            (
                Schematic::parse(
                    "customization:\n  secureboot:\n    enrollKeys: force\n    includeWellKnownCertificates: true\n",
                )
                .unwrap(),
                "51e6baa0e88e8c3517231638007ba433f3fdde58a21c303221928f4cd7796036",
            ),
            (with_config(cfg), "560f8d50521ea511466e55972e3557fc4b46fb498ff58005b9316eae469edb2b"),
            (
                with_config("version: v1alpha1\nmachine:\n  type: worker"),
                "f98002a9b579dfdb9a9a62d65ce26f3bc2b2a06ed6c1688d8a9b356760b45a1a",
            ),
            (with_config("a: 1\n\n"), "fca4adecd171aece57ec3ed47c15f15f8345fd781febe6f868a47a13e904b30d"),
            (with_config("a: 1\n\nb: 2\n"), "25bd74532d1ac03cb29cd82e1ca46dfd1bfe7125a9f13cb347a122b01c06740f"),
            (with_config("  a: 1\nb: 2\n"), "bdeec7aa83a4a0cf75f3322d08a2127008fc6a3b76b879fd4955fe3cc612dd89"),
            (with_config("a:\t1\nb: 2\n"), "6879837ea250711b49073d27c00abc508f874984ce60fe1dbdbeaa704485ae80"),
            (
                with_config("version: v1alpha1\n---\napiVersion: v1alpha1\nkind: HostnameConfig\n"),
                "7e0fac00716d3ecf00c336be2a279334df08285b0147438656602fcdd480fa31",
            ),
        ];
        for (schematic, want) in cases {
            let text = schematic.marshal().unwrap();
            assert_eq!(schematic.id().unwrap(), want, "{schematic:?}\n{text}");
            assert_eq!(Schematic::parse(&text).unwrap(), schematic, "reads back from\n{text}");
        }
        // Every field at once, in the factory's order, from YAML whose keys come in another order.
        let all = format!(
            "customization:\n  diskImage: {{sectorSize: 512}}\n  bootloader: grub\n  secureboot: {{enrollKeys: manual}}\n  systemExtensions: {{officialExtensions: [siderolabs/spin]}}\n  meta: [{{key: 10, value: foo}}]\n  extraKernelArgs: [console=ttyS0]\n  embeddedMachineConfiguration: |\n{}\noverlay: {{name: rpi_generic, image: siderolabs/sbc-raspberrypi}}\nowner: acme\n",
            cfg.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
        );
        let s = Schematic::parse(&all).unwrap();
        assert_eq!(
            s.marshal().unwrap(),
            format!(
                "owner: acme\noverlay:\n    image: siderolabs/sbc-raspberrypi\n    name: rpi_generic\ncustomization:\n    embeddedMachineConfiguration: |\n{}\n    extraKernelArgs:\n        - console=ttyS0\n    meta:\n        - key: 10\n          value: foo\n    systemExtensions:\n        officialExtensions:\n            - siderolabs/spin\n    bootloader: grub\n    secureboot:\n        enrollKeys: manual\n    diskImage:\n        sectorSize: 512\n",
                cfg.lines().map(|l| format!("        {l}")).collect::<Vec<_>>().join("\n")
            )
        );
    }

    #[test]
    fn unknown_and_unencodable_new_fields_are_refused_by_name() {
        let err = Schematic::parse("customization:\n  diskImage:\n    blockSize: 4096\n").unwrap_err().to_string();
        assert!(err.contains("blockSize"), "{err}");
        let err = Schematic::parse("customization:\n  bootloader: lilo\n").unwrap_err().to_string();
        assert!(err.contains("lilo") || err.contains("bootloader"), "{err}");
        let err = Schematic::parse("ownr: acme\n").unwrap_err().to_string();
        assert!(err.contains("ownr"), "{err}");
        let off = Schematic::parse("customization:\n  secureboot:\n    enrollKeys: 'off'\n").unwrap();
        let err = off.id().unwrap_err().to_string();
        assert!(err.contains("customization.secureboot.enrollKeys"), "{err}");
        for bad in ["a: 1 \nb: 2\n", "\na: 1\n", "a: 1\r\nb: 2\n", " \n"] {
            let s = Schematic {
                customization: Customization { embedded_machine_configuration: bad.into(), ..Default::default() },
                ..Default::default()
            };
            let err = s.id().unwrap_err().to_string();
            assert!(err.contains("customization.embeddedMachineConfiguration"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn scalars_are_quoted_as_yaml_v3_quotes_them() {
        for (s, want) in [
            ("siderolabs/amd-ucode", "siderolabs/amd-ucode"),
            ("console=ttyS0,115200n8", "console=ttyS0,115200n8"),
            ("ip=::::eth0:dhcp", "ip=::::eth0:dhcp"),
            ("a:b", "a:b"),
            ("-x", "-x"),
            ("it's", "it's"),
            ("1.2.3.4", "1.2.3.4"),
            ("", "\"\""),
            ("true", "\"true\""),
            ("null", "\"null\""),
            ("123", "\"123\""),
            ("0x1f", "\"0x1f\""),
            ("1e3", "\"1e3\""),
            (".5", "\".5\""),
            ("2024-01-01", "\"2024-01-01\""),
            ("{\"a\":1}", "'{\"a\":1}'"),
            ("a: b", "'a: b'"),
            ("a #b", "'a #b'"),
            ("- x", "'- x'"),
            ("*x", "'*x'"),
            (" lead", "' lead'"),
            ("it's: x", "'it''s: x'"),
        ] {
            assert_eq!(scalar("f", s).unwrap(), want, "{s:?}");
        }
        for bad in ["yes", "off", "1:20", "<<", "a\nb", "tab\there", "\u{1F600}"] {
            assert!(matches!(scalar("f", bad), Err(SchematicError::Unencodable { .. })), "{bad:?}");
        }
    }

    #[test]
    fn natural_order_of_option_keys() {
        let mut keys = vec!["b", "a10", "10", "a2", "9", "B", "_u", "1", "f"];
        keys.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(keys, vec!["_u", "1", "9", "10", "B", "a2", "a10", "b", "f"]);
    }

    #[test]
    fn refuses_unknown_fields_and_bad_keys() {
        let err = Schematic::parse("customization:\n  kernelArgs: [quiet]\n").unwrap_err().to_string();
        assert!(err.starts_with("schematic: ") && err.contains("kernelArgs"), "{err}");
        let err = Schematic::parse("customization:\n  meta: [{key: 300, value: x}]\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        let err =
            Schematic::parse("customization:\n  extraKernelArgs: [\"yes\"]\n").unwrap().id().unwrap_err().to_string();
        assert_eq!(err, "schematic: customization.extraKernelArgs[0]: \"yes\" cannot be encoded reproducibly (its quoting differs between the factory's YAML library versions)");
    }
}
