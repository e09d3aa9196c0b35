//! Writing the generated files, and checking that committed ones are up to date.

use std::path::Path;

use super::asyncapi::AsyncApi;
use super::describe::ChannelSchema;
use super::error::{SchemaError, UPDATE_ENV};
use crate::ChannelRoute;

/// The name of the channel's interface in files written by [`write_typescript`].
pub const INTERFACE: &str = "Channel";

/// The TypeScript declarations of `route`, its interface named `Channel`.
///
/// ```
/// use switchboard::prelude::*;
///
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// struct Join { room: String }
///
/// #[switchboard::message("join")]
/// async fn join(msg: Join) -> Result<String, ChannelError> {
///     Ok(msg.room)
/// }
///
/// let route = ChannelRoute::<()>::new("/ws").message(join);
/// let ts = switchboard::schema::typescript(&route).unwrap();
/// assert!(ts.contains("export interface Join {\n  room: string;\n}"));
/// assert!(ts.contains("join: { payload: Join; reply: string };"));
/// ```
pub fn typescript<S: 'static>(route: &ChannelRoute<S>) -> Result<String, SchemaError> {
    ChannelSchema::of(route)?.typescript(INTERFACE)
}

/// Writes the TypeScript declarations of `route` to `path` (a `.d.ts` file, or a `.ts` one),
/// its interface named `Channel`.
pub fn write_typescript<S: 'static>(
    route: &ChannelRoute<S>,
    path: impl AsRef<Path>,
) -> Result<(), SchemaError> {
    write_file(path, &typescript(route)?)
}

/// Fails with [`SchemaError::Stale`] unless `path` holds what [`write_typescript`] would
/// write: call it in a test, so that a change to a route's types that the committed file
/// misses fails the build. With `SWITCHBOARD_UPDATE_SCHEMA=1` (and not under CI) it writes the
/// file instead.
pub fn check_typescript<S: 'static>(
    route: &ChannelRoute<S>,
    path: impl AsRef<Path>,
) -> Result<(), SchemaError> {
    check_file(path, &typescript(route)?)
}

/// Writes the AsyncAPI document of `route` to `path` (JSON).
pub fn write_asyncapi<S: 'static>(
    route: &ChannelRoute<S>,
    info: &AsyncApi,
    path: impl AsRef<Path>,
) -> Result<(), SchemaError> {
    write_file(path, &json_text(&info.document(route)?))
}

/// Fails with [`SchemaError::Stale`] unless `path` holds what [`write_asyncapi`] would write
/// (see [`check_typescript`]).
pub fn check_asyncapi<S: 'static>(
    route: &ChannelRoute<S>,
    info: &AsyncApi,
    path: impl AsRef<Path>,
) -> Result<(), SchemaError> {
    check_file(path, &json_text(&info.document(route)?))
}

fn json_text(doc: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(doc).unwrap_or_default();
    text.push('\n');
    text
}

/// Writes `contents` to `path`, creating its directory.
pub fn write_file(path: impl AsRef<Path>, contents: &str) -> Result<(), SchemaError> {
    let path = path.as_ref();
    let io = |source| SchemaError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(path, contents).map_err(io)
}

/// Fails with [`SchemaError::Stale`] unless `path` holds `contents` (with
/// `SWITCHBOARD_UPDATE_SCHEMA=1` and not under CI, writes it instead).
pub fn check_file(path: impl AsRef<Path>, contents: &str) -> Result<(), SchemaError> {
    let path = path.as_ref();
    let committed = std::fs::read_to_string(path).ok();
    if committed.as_deref() == Some(contents) {
        return Ok(());
    }
    if update_requested() {
        return write_file(path, contents);
    }
    let difference = match &committed {
        None => "the file does not exist".to_owned(),
        Some(old) => first_difference(old, contents),
    };
    Err(SchemaError::Stale {
        path: path.display().to_string(),
        difference,
    })
}

fn update_requested() -> bool {
    let set =
        |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    set(UPDATE_ENV) && !set("CI")
}

fn first_difference(old: &str, new: &str) -> String {
    let (mut old_lines, mut new_lines) = (old.lines(), new.lines());
    for n in 1.. {
        match (old_lines.next(), new_lines.next()) {
            (Some(a), Some(b)) if a == b => continue,
            (None, None) => return "only line endings differ".to_owned(),
            (a, b) => {
                return format!(
                    "line {n}: the file has {}, generation gives {}",
                    a.map_or("nothing".to_owned(), |a| format!("`{a}`")),
                    b.map_or("nothing".to_owned(), |b| format!("`{b}`"))
                )
            }
        }
    }
    unreachable!()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_file_fails_with_its_first_difference() {
        let dir = std::env::temp_dir().join(format!("switchboard-schema-{}", std::process::id()));
        let path = dir.join("x.d.ts");
        write_file(&path, "a\nb\n").unwrap();
        assert!(check_file(&path, "a\nb\n").is_ok());
        let err = check_file(&path, "a\nc\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("line 2: the file has `b`, generation gives `c`"),
            "{text}"
        );
        assert!(text.contains(UPDATE_ENV), "{text}");
        let missing = check_file(dir.join("none.d.ts"), "a").unwrap_err();
        assert!(missing.to_string().contains("does not exist"), "{missing}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
