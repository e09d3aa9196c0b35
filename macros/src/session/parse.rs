//! Tokens into a [`State`] or a [`Block`].

use proc_macro2::TokenStream as TokenStream2;
use syn::{Attribute, DeriveInput, ImplItem, ImplItemFn, ItemImpl, LitStr};

use crate::util::no_args;

/// The struct under `#[switchboard::session]`.
pub(crate) type State = DeriveInput;

pub(crate) fn state(attr: TokenStream2, item: TokenStream2) -> syn::Result<State> {
    no_args(&attr, "session")?;
    syn::parse2(item)
}

/// The attributes that give a method its role; the block is emitted without them.
const HELPERS: [&str; 3] = ["message", "topic_message", "on_binary"];

/// The `impl` block under `#[switchboard::session_handlers]`.
pub(crate) struct Block {
    /// The block as it is emitted: without the helper attributes.
    pub block: ItemImpl,
    /// The methods with a role, in order.
    pub methods: Vec<Method>,
}

/// A method the session's `Session` impl calls.
pub(crate) struct Method {
    pub role: Role,
    pub func: ImplItemFn,
}

pub(crate) enum Role {
    /// `#[message("route")]`.
    Route(LitStr),
    /// `#[on_binary]`.
    Binary,
    /// `#[topic_message]`.
    Topic,
    /// `on_connect`, by name.
    Connect,
    /// `on_disconnect`, by name.
    Disconnect,
    /// `create`, by name: the constructor.
    Create,
}

pub(crate) fn handlers(attr: TokenStream2, item: TokenStream2) -> syn::Result<Block> {
    no_args(&attr, "session_handlers")?;
    let mut block: ItemImpl = syn::parse2(item)?;
    let mut methods = Vec::new();
    for item in &mut block.items {
        let ImplItem::Fn(func) = item else { continue };
        if let Some(role) = role(func)? {
            methods.push(Method {
                role,
                func: func.clone(),
            });
        }
    }
    Ok(Block { block, methods })
}

/// Removes the helper attributes of every method.
pub(crate) fn strip_helpers(block: &mut ItemImpl) {
    for item in &mut block.items {
        if let ImplItem::Fn(func) = item {
            func.attrs.retain(|a| !is_helper(a));
        }
    }
}

fn is_helper(attr: &Attribute) -> bool {
    HELPERS.iter().any(|name| attr.path().is_ident(name))
}

/// A method's role, from its helper attribute (taken off it) or its name.
fn role(func: &mut ImplItemFn) -> syn::Result<Option<Role>> {
    let mut helpers = func.attrs.iter().filter(|a| is_helper(a));
    let helper = helpers.next().cloned();
    if let Some(second) = helpers.next() {
        return Err(syn::Error::new_spanned(
            second,
            "a session method has one role: `#[message(\"route\")]`, `#[on_binary]` or `#[topic_message]`",
        ));
    }
    func.attrs.retain(|a| !is_helper(a));
    let Some(attr) = helper else {
        return Ok(match func.sig.ident.to_string().as_str() {
            "on_connect" => Some(Role::Connect),
            "on_disconnect" => Some(Role::Disconnect),
            "create" => Some(Role::Create),
            _ => None,
        });
    };
    if attr.path().is_ident("message") {
        let route = attr.parse_args().map_err(|_| {
            syn::Error::new_spanned(&attr, "expected a route name: `#[message(\"route\")]`")
        })?;
        return Ok(Some(Role::Route(route)));
    }
    attr.meta.require_path_only()?;
    Ok(Some(if attr.path().is_ident("on_binary") {
        Role::Binary
    } else {
        Role::Topic
    }))
}
