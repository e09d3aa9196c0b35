//! Compile-time checks of the handler macros: what must compile, and what must fail with an
//! error pointing at the user's code. The `.stderr` files were made with the workspace's
//! toolchain (Rust 1.95); regenerate with `TRYBUILD=overwrite cargo test -p switchboard-macros --test ui` after a
//! toolchain change.

#[test]
fn handler_macros() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
