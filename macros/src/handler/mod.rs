//! The stateless handler macros: `#[message("route")]`, `#[fallback]`, `#[on_binary]`,
//! `#[on_connect]`, `#[on_disconnect]` on an `async fn`.

mod expand;
mod parse;
mod validate;

use proc_macro::TokenStream;

/// Which macro is running.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Message,
    Fallback,
    Binary,
    Connect,
    Disconnect,
}

impl Kind {
    /// The macro's name, for messages.
    fn name(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Fallback => "fallback",
            Kind::Binary => "on_binary",
            Kind::Connect => "on_connect",
            Kind::Disconnect => "on_disconnect",
        }
    }
}

/// Parses, validates and expands one handler.
pub(crate) fn run(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    crate::util::expand(
        item,
        |item| {
            let handler = parse::parse(kind, attr.into(), item)?;
            validate::validate(&handler)?;
            Ok(expand::expand(&handler))
        },
        |item| item,
    )
}
