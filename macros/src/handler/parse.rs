//! Tokens into a [`Handler`].

use proc_macro2::TokenStream as TokenStream2;
use syn::parse::{Parse, ParseStream};
use syn::{Ident, ItemFn, LitStr, Token, Type};

use super::Kind;

/// A handler as written: the macro, its arguments and the function.
pub(crate) struct Handler {
    pub kind: Kind,
    pub args: Args,
    pub func: ItemFn,
}

/// The attribute's arguments: `"route"`, `session = Type`, or both, comma-separated.
pub(crate) struct Args {
    pub route: Option<LitStr>,
    /// The session type, for a handler whose arguments do not imply one.
    pub session: Option<Type>,
}

impl Parse for Args {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut args = Args {
            route: None,
            session: None,
        };
        while !input.is_empty() {
            if input.peek(LitStr) {
                if args.route.is_some() {
                    return Err(input.error("the route name is given twice"));
                }
                args.route = Some(input.parse()?);
            } else {
                let key: Ident = input.parse()?;
                if key != "session" {
                    return Err(syn::Error::new(
                        key.span(),
                        "unknown argument: expected a route name or `session = Type`",
                    ));
                }
                input.parse::<Token![=]>()?;
                args.session = Some(input.parse()?);
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(args)
    }
}

/// Parses the function first, so that a malformed item is reported before its attribute.
pub(crate) fn parse(kind: Kind, attr: TokenStream2, item: TokenStream2) -> syn::Result<Handler> {
    let func = syn::parse2(item)?;
    let args = syn::parse2(attr)?;
    Ok(Handler { kind, args, func })
}
