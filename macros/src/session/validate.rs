//! Misuse that the compiler would report badly, or not at all.

use syn::FnArg;

use super::parse::{Block, Method, Role, State};

pub(crate) fn state(state: &State) -> syn::Result<()> {
    if !state.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &state.generics,
            "session types cannot be generic",
        ));
    }
    Ok(())
}

pub(crate) fn handlers(block: &Block) -> syn::Result<()> {
    let Block { block, methods } = block;
    if let Some((_, path, _)) = &block.trait_ {
        return Err(syn::Error::new_spanned(
            path,
            "`#[switchboard::session_handlers]` goes on the struct's own `impl` block",
        ));
    }
    if !block.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &block.generics,
            "session types cannot be generic",
        ));
    }
    let mut routes = Vec::new();
    let mut binary = false;
    let mut topic = false;
    for method in methods {
        match &method.role {
            Role::Route(route) => {
                if route.value().is_empty() {
                    return Err(syn::Error::new_spanned(
                        route,
                        "the route name cannot be empty",
                    ));
                }
                if routes.contains(&route.value()) {
                    return Err(syn::Error::new_spanned(
                        route,
                        format!("two methods handle the route `{}`", route.value()),
                    ));
                }
                routes.push(route.value());
            }
            Role::Binary => once(&mut binary, method, "#[on_binary]")?,
            Role::Topic => once(&mut topic, method, "#[topic_message]")?,
            Role::Create | Role::Connect | Role::Disconnect => {}
        }
        self::method(method)?;
    }
    Ok(())
}

/// Every method with a role is an `async fn`. `create` builds the session: it takes no
/// `self`; the others run on its state: they take `&mut self`.
fn method(method: &Method) -> syn::Result<()> {
    let sig = &method.func.sig;
    let create = matches!(method.role, Role::Create);
    if sig.asyncness.is_none() {
        let message = if create {
            "`create` must be an `async fn`"
        } else {
            "session handlers must be `async fn`"
        };
        return Err(syn::Error::new_spanned(sig.fn_token, message));
    }
    match (create, sig.inputs.first()) {
        (true, Some(FnArg::Receiver(r))) => Err(syn::Error::new_spanned(
            r,
            "`create` builds the session: it takes no `self`",
        )),
        (true, _) => Ok(()),
        (false, Some(FnArg::Receiver(r))) if r.reference.is_some() && r.mutability.is_some() => {
            Ok(())
        }
        (false, Some(FnArg::Receiver(r))) => Err(syn::Error::new_spanned(
            r,
            "session handlers take `&mut self`",
        )),
        (false, _) => Err(syn::Error::new_spanned(
            &sig.ident,
            "session handlers take `&mut self` first",
        )),
    }
}

/// A role only one method may have.
fn once(seen: &mut bool, method: &Method, role: &str) -> syn::Result<()> {
    if std::mem::replace(seen, true) {
        return Err(syn::Error::new_spanned(
            &method.func.sig.ident,
            format!("a session has one `{role}` method"),
        ));
    }
    Ok(())
}
