//! Misuse that the compiler would report badly, or not at all.

use proc_macro2::Span;
use syn::{FnArg, ReturnType, Type};

use super::parse::Handler;
use super::Kind;

pub(crate) fn validate(handler: &Handler) -> syn::Result<()> {
    let Handler { kind, args, func } = handler;
    let kind = *kind;
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            sig.fn_token,
            format!(
                "a `#[switchboard::{}]` handler must be an `async fn`",
                kind.name()
            ),
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "channel handlers cannot be generic",
        ));
    }
    if let Some(v) = &sig.variadic {
        return Err(syn::Error::new_spanned(
            v,
            "channel handlers cannot be variadic",
        ));
    }
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new_spanned(
                    r,
                    "channel handlers are free functions: `self` is not allowed here (stateful handlers belong in a session actor)",
                ))
            }
            // A connect handler's arguments are actix-web extractors; the others are bounds of
            // the generated impl, where a borrowed type has no lifetime to borrow for.
            FnArg::Typed(pat) if kind != Kind::Connect => {
                if let Type::Reference(r) = &*pat.ty {
                    return Err(syn::Error::new_spanned(
                        r,
                        "channel handlers take their arguments by value: extractors (`Channel<S>`, `web::Data<T>`, ...) and the payload",
                    ));
                }
            }
            FnArg::Typed(_) => {}
        }
    }
    match (kind, &args.route) {
        (Kind::Message, None) => Err(syn::Error::new(
            Span::call_site(),
            "missing route name: write `#[switchboard::message(\"route\")]`",
        )),
        (Kind::Message, Some(route)) if route.value().is_empty() => Err(syn::Error::new_spanned(
            route,
            "the route name cannot be empty",
        )),
        (Kind::Message, Some(_)) => Ok(()),
        (_, Some(route)) => Err(syn::Error::new_spanned(
            route,
            format!("`#[switchboard::{}]` takes no route name", kind.name()),
        )),
        (_, None) => Ok(()),
    }?;
    if kind == Kind::Connect && matches!(sig.output, ReturnType::Default) {
        return Err(syn::Error::new_spanned(
            sig.fn_token,
            "a connect handler returns `Result<S, ChannelError>` (or `Result<Option<S>, _>`): the session value, or the rejection",
        ));
    }
    Ok(())
}
