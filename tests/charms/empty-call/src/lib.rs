//! Benchmark fixture: the floor under the leadership host functions. `run(n)` calls the
//! empty host function `noop` `n` times; `run-check` and `run-get` call host functions with
//! the signatures of `is-leader` and `leader-get` that do nothing but answer, in the same
//! loops as the probe charm's `call-is-leader` and `call-get`.

wit_bindgen::generate!({ world: "empty-call", path: "wit" });

use bench::empty::host;

struct EmptyCall;

impl Guest for EmptyCall {
    fn run(n: u32) {
        for _ in 0..n {
            host::noop();
        }
    }

    fn run_check(n: u32) -> u32 {
        (0..n).filter(|_| matches!(std::hint::black_box(host::check()), Ok(true))).count() as u32
    }

    fn run_get(n: u32, key: String) -> u32 {
        (0..n).filter(|_| std::hint::black_box(host::get(&key)).is_ok_and(|v| v.is_some())).count() as u32
    }
}

export!(EmptyCall);
