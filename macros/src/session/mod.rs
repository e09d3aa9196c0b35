//! The session macros: `#[session]` on the state struct, `#[session_handlers]` on its `impl`
//! block.

mod expand;
mod parse;
mod validate;

use proc_macro::TokenStream;

/// `#[switchboard::session]`.
pub(crate) fn run_state(attr: TokenStream, item: TokenStream) -> TokenStream {
    crate::util::expand(
        item,
        |item| {
            let state = parse::state(attr.into(), item)?;
            validate::state(&state)?;
            Ok(expand::state(&state))
        },
        |item| item,
    )
}

/// `#[switchboard::session_handlers]`.
pub(crate) fn run_handlers(attr: TokenStream, item: TokenStream) -> TokenStream {
    crate::util::expand(
        item,
        |item| {
            let block = parse::handlers(attr.into(), item)?;
            validate::handlers(&block)?;
            Ok(expand::handlers(&block))
        },
        // Without the helper attributes, so that the only errors are ours and the methods
        // still resolve.
        |item| match syn::parse2(item.clone()) {
            Ok(mut block) => {
                parse::strip_helpers(&mut block);
                quote::ToTokens::into_token_stream(block)
            }
            Err(_) => item,
        },
    )
}
