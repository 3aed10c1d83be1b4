//! Benchmark fixture: `run(n)` calls the empty host function `noop` `n` times, so the cost
//! of one guest-to-host call can be measured against the leadership host functions.

wit_bindgen::generate!({ world: "empty-call", path: "wit" });

struct EmptyCall;

impl Guest for EmptyCall {
    fn run(n: u32) {
        for _ in 0..n {
            bench::empty::host::noop();
        }
    }
}

export!(EmptyCall);
