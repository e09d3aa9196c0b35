//! The JavaScript client's types: `framework/js/switchboard.js` carries JSDoc types, checked by
//! the TypeScript compiler in strict mode together with the chat example's page
//! (`framework/js/tsconfig.json`); its declarations, `framework/js/switchboard.d.ts`, are
//! generated from them and committed.
//!
//! The compiler is `$TSC`, else `tsc` on the `PATH` (`.ci/run` installs TypeScript 5 into
//! `/opt/switchboard-ts` and sets `TSC`). Without one the tests are skipped, except under CI
//! (`CI=true` or `CI=1`), where that is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use switchboard_suite::typescript::{printed, run, tsc};

/// How `switchboard.d.ts` is generated (the `build:types` script of framework/js/package.json),
/// with the output directory appended.
const DECLARATION_FLAGS: &[&str] = &[
    "--declaration",
    "--allowJs",
    "--emitDeclarationOnly",
    "--strict",
    "--target",
    "ES2022",
    "--lib",
    "ES2022,DOM",
    "--outDir",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh, empty directory of this test's own under the target directory's tmp.
fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("js_types-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

#[test]
fn client_and_chat_page_type_check_in_strict_mode() {
    let Some((tsc, version)) = tsc("the JS type check (tsc)") else {
        return;
    };
    let out = run(Command::new(&tsc)
        .arg("-p")
        .arg(root().join("framework/js/tsconfig.json"))
        .arg("--pretty")
        .arg("false"));
    assert!(
        out.status.success(),
        "tsc ({version}) -p framework/js reports errors in switchboard.js or the chat page \
         ({})\n{}",
        out.status,
        printed(&out)
    );
}

#[test]
fn committed_declarations_are_up_to_date() {
    let Some((tsc, version)) = tsc("the JS declarations check (tsc)") else {
        return;
    };
    let dir = temp_dir("dts");
    let out = run(Command::new(&tsc)
        .args(DECLARATION_FLAGS)
        .arg(&dir)
        .arg(root().join("framework/js/switchboard.js")));
    assert!(
        out.status.success(),
        "tsc ({version}) cannot generate the declarations ({})\n{}",
        out.status,
        printed(&out)
    );
    let fresh = std::fs::read_to_string(dir.join("switchboard.d.ts")).expect("generated .d.ts");
    let committed = std::fs::read_to_string(root().join("framework/js/switchboard.d.ts"))
        .expect("framework/js/switchboard.d.ts is committed");
    assert!(
        fresh == committed,
        "framework/js/switchboard.d.ts is stale: regenerate it with\n  \
         (cd framework/js && tsc {} . switchboard.js)\n\
         (the build:types script of framework/js/package.json)\n--- generated ---\n{fresh}",
        DECLARATION_FLAGS.join(" ")
    );
}

#[test]
fn misusing_the_client_fails_the_type_check() {
    let Some((tsc, version)) = tsc("the JS negative type check (tsc)") else {
        return;
    };
    let client = root().join("framework/js/switchboard.js");
    let dir = temp_dir("misuse");
    let file = dir.join("misuse.ts");
    // Each line is wrong in its own way; the import resolves to the committed switchboard.d.ts
    // (a .d.ts beside the .js comes first), so these are the types an app gets.
    let source = format!(
        "import {{ Switchboard }} from {client:?};\n\
         const sb = new Switchboard(\"ws://127.0.0.1/ws\", {{ timout: 1000 }});\n\
         sb.request(42, {{ n: 1 }});\n\
         sb.on(\"close\", (info) => info.cod);\n\
         export {{}};\n",
        client = client.display().to_string()
    );
    std::fs::write(&file, source).expect("write the misuse file");
    let out = run(Command::new(&tsc)
        .args(["--noEmit", "--strict", "--pretty", "false"])
        .args(["--target", "ES2022", "--lib", "ES2022,DOM"])
        .args(["--module", "ES2022", "--moduleResolution", "bundler"])
        .arg(&file));
    let report = printed(&out);
    assert!(
        !out.status.success(),
        "tsc ({version}) accepted a misuse of the client: its types check nothing\n{report}"
    );
    // Failing for the expected reasons, not for a missing module or a broken setup.
    for (what, needle) in [
        (
            "an unknown option",
            "'timout' does not exist in type 'SwitchboardOptions'",
        ),
        ("a number as the route", "(3,12): error TS2345"),
        (
            "a field the close event lacks",
            "'cod' does not exist on type 'CloseInfo'",
        ),
    ] {
        assert!(
            report.contains(needle),
            "tsc did not reject {what} (expected `{needle}`)\n{report}"
        );
    }
    assert!(
        !report.contains("TS2307"),
        "tsc could not find the client\n{report}"
    );
}
