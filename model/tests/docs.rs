//! `docs/protocol.md` is checked against the model's own names: it must name every
//! property and every safeguard, and the constants it relies on.

use leadership_model::Safeguard;
use leadership_model::model::PROPERTIES;

#[test]
fn the_protocol_page_names_every_property_and_safeguard() {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md")).unwrap();
    let mut missing: Vec<String> =
        PROPERTIES.iter().filter(|name| !page.contains(&format!("`{name}`"))).map(|n| n.to_string()).collect();
    for safeguard in Safeguard::ALL {
        let name = format!("`{safeguard:?}`");
        if !page.contains(&name) {
            missing.push(name);
        }
    }
    for constant in ["`LEASE`", "`WINDOW`", "`WINDOW_MAX`", "`ANSWER_HOLD`"] {
        if !page.contains(constant) {
            missing.push(constant.into());
        }
    }
    assert!(missing.is_empty(), "docs/protocol.md does not name {missing:?}");
}
