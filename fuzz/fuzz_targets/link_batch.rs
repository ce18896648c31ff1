//! Any body an agent (or whoever holds a site's credential) posts to
//! `POST /v1/agent/events`: decoding the batch and each event into the engine's form
//! must answer with an error, never panic, and an event that decodes must encode back
//! to the same kind and data.
#![no_main]

use lariat_api_types::EventBatch;
use lariat_central::event_of;
use lariat_engine::EventKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = serde_json::from_slice::<EventBatch>(data) else {
        return;
    };
    for e in batch.events {
        let Ok(event) = event_of(e) else {
            continue;
        };
        let again = EventKind::from_parts(event.kind.name(), event.kind.data())
            .expect("an event's own parts must decode");
        assert_eq!(again, event.kind, "an event must survive its wire form");
    }
});
