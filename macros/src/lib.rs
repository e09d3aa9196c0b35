//! Procedural macros for `switchboard`. Use them through the `switchboard` crate:
//! `#[switchboard::message("route")]`, `#[switchboard::on_connect]`, ...
//!
//! Each macro turns an `async fn` into a unit struct of the same name implementing one of the
//! framework's handler traits, the way actix-web's route macros do; `#[session_handlers]` turns
//! an `impl` block into the struct's `Session` impl. The generated code only calls the
//! framework's API; all logic lives in the library.
//!
//! The macros never decide by how a type is spelled. Whether an argument is `Channel<S>`, the
//! session context, an extractor or the payload is asked of the compiler through the traits its
//! type implements (`switchboard::__private::arg_kind!`), so renamed imports, full paths and
//! type aliases all work; a stateless handler's session type is inferred from its arguments by
//! a generic impl.
//!
//! Each macro runs in stages, one module each: `parse` (tokens into a small AST), `validate`
//! (misuse the compiler would report badly, with spans on the user's code) and `expand` (the
//! generated code). On error, the original item is still emitted beside the error, so that IDEs
//! keep working.

mod handler;
mod session;
mod util;

use proc_macro::TokenStream;

use handler::Kind;

/// A routed message handler: `#[switchboard::message("join")]`.
#[proc_macro_attribute]
pub fn message(attr: TokenStream, item: TokenStream) -> TokenStream {
    handler::run(Kind::Message, attr, item)
}

/// The fallback handler (`$default` route).
#[proc_macro_attribute]
pub fn fallback(attr: TokenStream, item: TokenStream) -> TokenStream {
    handler::run(Kind::Fallback, attr, item)
}

/// The binary-frame handler.
#[proc_macro_attribute]
pub fn on_binary(attr: TokenStream, item: TokenStream) -> TokenStream {
    handler::run(Kind::Binary, attr, item)
}

/// The connect handler.
#[proc_macro_attribute]
pub fn on_connect(attr: TokenStream, item: TokenStream) -> TokenStream {
    handler::run(Kind::Connect, attr, item)
}

/// The disconnect handler.
#[proc_macro_attribute]
pub fn on_disconnect(attr: TokenStream, item: TokenStream) -> TokenStream {
    handler::run(Kind::Disconnect, attr, item)
}

/// Marks a struct as session state: `#[switchboard::session] struct Game { .. }`.
#[proc_macro_attribute]
pub fn session(attr: TokenStream, item: TokenStream) -> TokenStream {
    session::run_state(attr, item)
}

/// Turns a session struct's `impl` block into its routes and lifecycle:
/// `#[message("route")]` methods, `on_connect`, `on_disconnect`, a `#[topic_message]` method,
/// an `#[on_binary]` method, and an optional `async fn create(..) -> Result<Self, E>`.
#[proc_macro_attribute]
pub fn session_handlers(attr: TokenStream, item: TokenStream) -> TokenStream {
    session::run_handlers(attr, item)
}
