//! Loading charms: clear errors for what is not a charm, and a compiled-code cache that
//! survives corruption.

mod support;

use charm_host::runtime::LoadError;
use support::*;

#[test]
fn refuses_files_that_are_not_components() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(None);
    let cases: [(&str, &[u8], &str); 3] = [
        ("text.wasm", b"not wasm at all", "magic number"),
        ("module.wasm", b"\0asm\x01\0\0\0", "core wasm module"),
        ("empty.wasm", b"", "magic number"),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = runtime.load_charm(&path).unwrap_err();
        assert!(matches!(err, LoadError::NotComponent { .. }), "{name}: {err:?}");
        let message = err.to_string();
        assert!(message.contains(expected) && message.contains(name), "{message}");
    }
    let missing = runtime.load_charm(&dir.path().join("missing.wasm")).unwrap_err();
    assert!(matches!(missing, LoadError::Read { .. }));
}

#[test]
fn refuses_a_component_of_another_world() {
    let runtime = runtime(None);
    let err = runtime.load_charm(&charm_wasm("tests/charms/other-world")).unwrap_err();
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("juju:charm/hooks@0.1.0") && message.contains("test:other/greeter"), "{message}");
}

#[test]
fn caches_compiled_code_and_treats_corrupt_entries_as_misses() {
    let cache = tempfile::tempdir().unwrap();
    let wasm = charm_wasm("tests/charms/probe");
    let cold = runtime(Some(cache.path().to_owned())).load_charm(&wasm).unwrap();
    assert!(!cold.from_cache());
    let warm = runtime(Some(cache.path().to_owned())).load_charm(&wasm).unwrap();
    assert!(warm.from_cache(), "a second runtime finds the entry");

    let entries: Vec<_> = std::fs::read_dir(cache.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    let mut bytes = std::fs::read(entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(entry, &bytes).unwrap();
    let after_flip = runtime(Some(cache.path().to_owned())).load_charm(&wasm).unwrap();
    assert!(!after_flip.from_cache(), "a corrupt entry is a miss");

    std::fs::write(entry, &bytes[..100]).unwrap();
    assert!(!runtime(Some(cache.path().to_owned())).load_charm(&wasm).unwrap().from_cache(), "truncated");
    assert!(runtime(Some(cache.path().to_owned())).load_charm(&wasm).unwrap().from_cache(), "rewritten");
}
