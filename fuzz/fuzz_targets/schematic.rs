//! An Image Factory schematic (`moonboot_imager::schematic`): `Schematic::parse` (YAML or JSON,
//! unknown fields refused), `marshal` (the factory's YAML encoding, refusing what it cannot reproduce) and
//! `id`. A schematic that marshals must read back from its own marshalled text as the same
//! schematic, and its ID is the sha256 of that text.
//!
//! Input: the schematic's text (UTF-8; other bytes are skipped).

#![no_main]

use boot_artifact::digest::Sha256Digest;
use libfuzzer_sys::fuzz_target;
use moonboot_imager::schematic::Schematic;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(s) = Schematic::parse(text) else { return };
    let Ok(marshalled) = s.marshal() else {
        assert!(s.id().is_err());
        return;
    };
    assert!(marshalled.ends_with('\n'));
    assert_eq!(s.id().expect("marshal succeeded"), Sha256Digest::of(marshalled.as_bytes()).hex());
    let back = Schematic::parse(&marshalled)
        .unwrap_or_else(|e| panic!("marshalled schematic does not parse: {e}\n{marshalled}"));
    assert_eq!(back, s, "marshalled schematic reads back differently:\n{marshalled}");
    assert_eq!(back.marshal().expect("marshals again"), marshalled);
});
