//! Any text submitted as a workflow definition (`POST /v1/workflows`, a design's
//! workflow files): parsing and validating answer with problems, never panic, and a
//! definition that is accepted survives its canonical form (stored and compared
//! between versions) unchanged.
//!
//! Input: the first byte picks the format (even: YAML, odd: JSON), the rest is the text.
#![no_main]

use lariat_engine::model;
use lariat_engine::{Format, Workflow};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let format = if sel & 1 == 0 {
        Format::Yaml
    } else {
        Format::Json
    };
    let Ok(def) = model::parse(text, format) else {
        return;
    };
    let canonical = Workflow::canonical_json(&def);
    let back = model::parse(&canonical, Format::Json).expect("the canonical form must parse");
    assert_eq!(back, def, "the canonical form must keep the definition");
    let first = model::validate_shape(def, 1).is_ok();
    assert_eq!(
        first,
        model::validate_shape(back, 1).is_ok(),
        "validation must not depend on the text's form"
    );
});
