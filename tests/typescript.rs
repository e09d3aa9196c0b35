//! The generated types at work (`switchboard::schema`, docs/typescript.md): the chat example's
//! TypeScript declarations and AsyncAPI document are up to date, a TypeScript file using the
//! chat channel correctly passes `tsc` while one with three misuses fails with exactly those
//! three errors, and the AsyncAPI document passes the official `@asyncapi/parser`.
//!
//! The compiler is `$TSC`, else `tsc` on the `PATH`; the parser is the npm prefix
//! `$ASYNCAPI_PARSER_PREFIX` (default `/opt/switchboard-asyncapi`), run by `$NODE` or `node`
//! (`.ci/run` installs both). Without them those tests are skipped, except under CI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use switchboard_suite::typescript::{printed, run, tsc};
use switchboard_suite::{example_binary, skip};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tsc --noEmit --strict` over one file of tests/typescript.
fn check(tsc: &str, file: &str) -> Output {
    run(Command::new(tsc)
        .args(["--noEmit", "--strict", "--pretty", "false"])
        .args(["--target", "ES2022", "--lib", "ES2022,DOM"])
        .args(["--module", "ES2022", "--moduleResolution", "bundler"])
        .arg(root().join("tests/typescript").join(file)))
}

/// The committed chat.d.ts and asyncapi.json are what the chat channel generates today
/// (`cargo run --example chat -- --schema check`), and so are the other examples' files.
#[test]
fn committed_generated_files_are_up_to_date() {
    for (example, sources) in [
        // Not the generated files themselves, which the binary writes after it was built.
        ("chat", &["examples/chat/main.rs", "framework/src"][..]),
        ("echo", &["examples/echo.rs", "framework/src"][..]),
        ("session", &["examples/session.rs", "framework/src"][..]),
    ] {
        let bin = example_binary(example, sources);
        let out = run(Command::new(bin).args(["--schema", "check"]));
        assert!(
            out.status.success(),
            "the {example} example's generated files are stale: regenerate them with\n  \
             cargo run --example {example} -- --schema write\n{}",
            printed(&out)
        );
    }
}

#[test]
fn using_the_chat_channel_correctly_type_checks() {
    let Some((tsc, _)) = tsc("the TypeScript check of the chat channel") else {
        return;
    };
    let out = check(&tsc, "chat_ok.ts");
    assert!(
        out.status.success(),
        "tsc rejects a correct use of the chat channel's generated types\n{}",
        printed(&out)
    );
}

#[test]
fn a_wrong_route_payload_and_reply_use_fail_with_exactly_those_errors() {
    let Some((tsc, _)) = tsc("the negative TypeScript check of the chat channel") else {
        return;
    };
    let out = check(&tsc, "chat_wrong.ts");
    let report = printed(&out);
    assert!(!out.status.success(), "tsc accepted misuses\n{report}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let errors: Vec<&str> = stdout.lines().filter(|l| l.contains("error TS")).collect();
    let expected = [
        (
            "a route the channel does not have",
            "chat_wrong.ts(8,20): error TS2345: Argument of type '\"nickname\"' is not assignable",
        ),
        (
            "a payload field `Say` does not have",
            "chat_wrong.ts(9,44): error TS2561: Object literal may only specify known properties, but 'txt' does not exist in type 'Say'",
        ),
        (
            "the `nick` reply (a string) used as a number",
            "chat_wrong.ts(11,8): error TS2551: Property 'toFixed' does not exist on type 'string'",
        ),
    ];
    assert_eq!(
        errors.len(),
        expected.len(),
        "expected exactly {} errors\n{report}",
        expected.len()
    );
    for ((what, needle), line) in expected.iter().zip(&errors) {
        assert!(
            line.contains(needle),
            "tsc did not reject {what} as expected (`{needle}`), it says `{line}`\n{report}"
        );
    }
}

/// Node and the npm prefix holding `@asyncapi/parser`, or `None` once the test was skipped.
fn asyncapi_parser(test: &str) -> Option<(String, PathBuf)> {
    let node = std::env::var("NODE").unwrap_or_else(|_| "node".to_owned());
    if !Command::new(&node)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        skip(
            test,
            &format!("`{node}` (Node.js; set NODE) is not installed"),
        );
        return None;
    }
    let prefix = PathBuf::from(
        std::env::var("ASYNCAPI_PARSER_PREFIX")
            .unwrap_or_else(|_| "/opt/switchboard-asyncapi".to_owned()),
    );
    if !prefix
        .join("node_modules/@asyncapi/parser/package.json")
        .is_file()
    {
        skip(
            test,
            &format!(
                "@asyncapi/parser is not installed under {} (set ASYNCAPI_PARSER_PREFIX)",
                prefix.display()
            ),
        );
        return None;
    }
    Some((node, prefix))
}

fn validate(node: &str, prefix: &Path, document: &Path) -> Output {
    run(Command::new(node)
        .arg(root().join("tests/typescript/validate_asyncapi.mjs"))
        .arg(document)
        .env("ASYNCAPI_PARSER_PREFIX", prefix))
}

#[test]
fn the_examples_asyncapi_documents_pass_the_official_parser() {
    let Some((node, prefix)) = asyncapi_parser("the AsyncAPI validation") else {
        return;
    };
    for file in [
        "examples/chat/asyncapi.json",
        "examples/generated/echo.asyncapi.json",
        "examples/generated/session.asyncapi.json",
    ] {
        let out = validate(&node, &prefix, &root().join(file));
        let report = printed(&out);
        assert!(
            out.status.success() && report.contains("\n0 errors"),
            "@asyncapi/parser reports errors in {file}\n{report}"
        );
    }
    // A channel with expiring tokens adds the `refresh` route and the frames the server sends
    // on its own (`refresh`, `unsubscribed`): none of the examples has them.
    let tokens = switchboard::ChannelRoute::<()>::new("/ws/tokens")
        .allow_join("room:*")
        .on_refresh(|_ch: switchboard::Channel<()>, _token: String| async move { Ok(None) });
    let doc = switchboard::schema::AsyncApi::new("Tokens", "1.0.0")
        .server("local", "127.0.0.1:8080", "ws")
        .document(&tokens)
        .unwrap();
    for op in ["refresh", "frame.refresh", "frame.unsubscribed"] {
        assert!(doc["operations"].get(op).is_some(), "no `{op}` operation");
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("typescript-asyncapi");
    std::fs::create_dir_all(&dir).unwrap();
    let with_tokens = dir.join("tokens.json");
    std::fs::write(&with_tokens, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let out = validate(&node, &prefix, &with_tokens);
    let report = printed(&out);
    assert!(
        out.status.success() && report.contains("\n0 errors"),
        "@asyncapi/parser reports errors in a token channel's document\n{report}"
    );

    let document = root().join("examples/chat/asyncapi.json");

    // The parser does judge: the same document with an operation on a channel that does not
    // exist fails.
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&document).unwrap()).unwrap();
    doc["operations"]["nick"]["channel"]["$ref"] = "#/channels/nowhere".into();
    let broken = dir.join("broken.json");
    std::fs::write(&broken, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let out = validate(&node, &prefix, &broken);
    assert!(
        !out.status.success(),
        "@asyncapi/parser accepted a broken document: the check proves nothing\n{}",
        printed(&out)
    );
}
