//! Test fixture: a valid component of another world, which charm-host must refuse.

wit_bindgen::generate!({ world: "other", path: "wit" });

struct Greeter;

impl exports::test::other::greeter::Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello, {name}")
    }
}

export!(Greeter);
