//! A [`Handler`] into a unit struct and its handler-trait impl.
//!
//! The impl is generic over the session type `__S`, and bounds each argument type by
//! `Arg<__S, KIND>` where `KIND` is the compiler's classification of that type
//! (`switchboard::__private::arg_kind!`). The compiler thus infers the session type from the
//! arguments: a `Channel<User>` argument (however it is spelled) makes the struct a handler for
//! `User` channels only, a handler without one fits every channel, and `session = T` pins it to
//! `T`. Since such bounds are only checked where a channel mounts the handler, each argument
//! is also checked at once, in a non-generic function (`Slot::check`).

use proc_macro2::{Ident, Punct, Spacing, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ReturnType, Type};

use super::parse::Handler;
use super::Kind;
use crate::util::{arg_kind, arg_types, connect_query, return_span, route_types, slot_call, spans};

/// The parts in which the handler kinds differ.
struct Shell {
    /// The handler trait, without its session type.
    handler_trait: TokenStream2,
    /// The impl's bounds on the session type `__S`.
    bounds: Vec<TokenStream2>,
    /// Trait items besides `call`.
    items: TokenStream2,
    /// What `call` takes and what its future gives.
    request: TokenStream2,
    output: TokenStream2,
    /// Statements checking the arguments where no session type is known.
    checks: Vec<TokenStream2>,
    /// Statements binding each argument.
    extracts: Vec<TokenStream2>,
    /// What becomes of the function's result, `__out`.
    finish: TokenStream2,
}

pub(crate) fn expand(handler: &Handler) -> TokenStream2 {
    let types = arg_types(&handler.func.sig);
    let names: Vec<Ident> = (0..types.len())
        .map(|i| format_ident!("__arg{i}"))
        .collect();
    let shell = match handler.kind {
        Kind::Message | Kind::Fallback | Kind::Binary => message(handler, &types, &names),
        Kind::Disconnect => disconnect(handler, &types, &names),
        Kind::Connect => connect(handler, &types, &names),
    };
    emit(handler, shell, &names)
}

fn message(handler: &Handler, types: &[&Type], names: &[Ident]) -> Shell {
    let route = match handler.kind {
        Kind::Message => {
            let route = &handler.args.route;
            quote!(#route)
        }
        Kind::Fallback => quote!(::switchboard::handler::DEFAULT_ROUTE),
        _ => quote!(::switchboard::handler::BINARY_ROUTE),
    };
    // The last argument may be the payload.
    let is_last = |i: usize| i + 1 == types.len();
    let described = route_types(types.last().copied(), &handler.func.sig.output);
    let extracts = per_arg(types, is_last, extract)
        .into_iter()
        .zip(names)
        .map(|(value, name)| quote!(let #name = #value?;));
    Shell {
        handler_trait: quote!(::switchboard::MessageHandler),
        bounds: per_arg(types, is_last, arg_bound),
        items: quote! {
            fn route(&self) -> &str {
                #route
            }

            ::switchboard::__private::if_schema! {
                fn types(&self) -> ::std::option::Option<::switchboard::schema::RouteTypes> {
                    ::std::option::Option::Some(#described)
                }
            }
        },
        request: quote!(::switchboard::MessageRequest<__S>),
        output: quote!(::std::result::Result<::switchboard::Reply, ::switchboard::ChannelError>),
        checks: per_arg(types, is_last, check),
        extracts: extracts.collect(),
        finish: quote_spanned! {return_span(&handler.func.sig)=>
            ::switchboard::__private::reply(&__req, __out)
        },
    }
}

fn disconnect(handler: &Handler, types: &[&Type], names: &[Ident]) -> Shell {
    // Disconnect calls carry no message: every argument is an extractor. Nothing can answer
    // an error, so a failed extraction is logged and the handler not run.
    let not_last = |_| false;
    let extracts = per_arg(types, not_last, extract)
        .into_iter()
        .zip(names)
        .map(|(value, name)| {
            quote! {
                let #name = match #value {
                    ::std::result::Result::Ok(v) => v,
                    ::std::result::Result::Err(e) => {
                        ::switchboard::__private::log_disconnect_error(&e);
                        return;
                    }
                };
            }
        });
    Shell {
        handler_trait: quote!(::switchboard::DisconnectHandler),
        bounds: per_arg(types, not_last, arg_bound),
        items: TokenStream2::new(),
        request: quote!(::switchboard::MessageRequest<__S>),
        output: quote!(()),
        checks: per_arg(types, not_last, check),
        extracts: extracts.collect(),
        finish: quote_spanned! {return_span(&handler.func.sig)=>
            ::switchboard::__private::unit(__out)
        },
    }
}

/// A connect handler's arguments are actix-web extractors, whatever the session type; the
/// session type is what its result accepts the connection with.
fn connect(handler: &Handler, types: &[&Type], names: &[Ident]) -> Shell {
    let ReturnType::Type(_, ret) = &handler.func.sig.output else {
        unreachable!("validated: a connect handler returns its result")
    };
    let extracts = types.iter().zip(names).map(|(ty, name)| {
        quote_spanned! {ty.span()=>
            let #name = ::switchboard::__private::connect_arg::<#ty>(&__req).await?;
        }
    });
    let query = connect_query(types, true);
    Shell {
        handler_trait: quote!(::switchboard::ConnectHandler),
        bounds: vec![quote_spanned!(ret.span()=> #ret: ::switchboard::__private::IntoSession<__S>)],
        items: query,
        request: quote!(::switchboard::__private::actix_web::HttpRequest),
        output: quote! {
            ::std::result::Result<::std::option::Option<__S>, ::switchboard::ChannelError>
        },
        checks: Vec::new(),
        extracts: extracts.collect(),
        finish: quote_spanned! {ret.span()=>
            ::switchboard::__private::into_session::<__S, _>(__out)
        },
    }
}

/// `f(type, last)` for each argument; `is_last(i)` says which one may be the payload.
fn per_arg(
    types: &[&Type],
    is_last: impl Fn(usize) -> bool,
    f: fn(&Type, bool) -> TokenStream2,
) -> Vec<TokenStream2> {
    types
        .iter()
        .enumerate()
        .map(|(i, ty)| f(ty, is_last(i)))
        .collect()
}

/// `ty: Arg<__S, KIND>`: the bound through which the compiler infers the session type.
fn arg_bound(ty: &Type, last: bool) -> TokenStream2 {
    let kind = arg_kind(ty, last);
    let (start, end) = spans(ty);
    // Errors underline the bound from the type's first token to its last.
    let mut close = Punct::new('>', Spacing::Alone);
    close.set_span(end);
    quote_spanned!(start=> #ty: ::switchboard::__private::Arg<__S, #kind #close)
}

/// The argument, extracted from `__req` through its [`arg_bound`].
fn extract(ty: &Type, last: bool) -> TokenStream2 {
    let kind = arg_kind(ty, last);
    quote_spanned! {ty.span()=>
        <#ty as ::switchboard::__private::Arg<__S, #kind>>::extract(&__req)
    }
}

/// The argument's eager check: `Slot::<ty, KIND>::check();`.
fn check(ty: &Type, last: bool) -> TokenStream2 {
    let check = slot_call(ty, last, "check", TokenStream2::new());
    quote!(#check;)
}

fn emit(handler: &Handler, shell: Shell, names: &[Ident]) -> TokenStream2 {
    let func = &handler.func;
    let name = &func.sig.ident;
    let vis = &func.vis;
    let docs = func.attrs.iter().filter(|a| a.path().is_ident("doc"));
    // The user's function, unchanged but for its name, inside `call`.
    let mut inner = func.clone();
    inner.attrs.retain(|a| !a.path().is_ident("doc"));
    inner.vis = syn::Visibility::Inherited;
    inner.sig.ident = format_ident!("__switchboard_handler");

    let Shell {
        handler_trait,
        mut bounds,
        items,
        request,
        output,
        checks,
        extracts,
        finish,
    } = shell;
    if let Some(session) = &handler.args.session {
        bounds.push(quote_spanned!(session.span()=> #session: ::switchboard::__private::Is<__S>));
    }
    // A nested function is not generic: the checks run as soon as the handler is compiled.
    let checks = (!checks.is_empty()).then(|| {
        quote! {
            #[allow(dead_code)]
            fn __switchboard_check() {
                #(#checks)*
            }
        }
    });
    quote! {
        #(#docs)*
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug)]
        #vis struct #name;

        impl<__S: 'static> #handler_trait<__S> for #name
        where
            #(#bounds,)*
        {
            #items

            fn call(&self, __req: #request) -> ::switchboard::__private::BoxFuture<#output> {
                #inner
                #checks
                ::std::boxed::Box::pin(async move {
                    #(#extracts)*
                    let __out = __switchboard_handler(#(#names),*).await;
                    #finish
                })
            }
        }
    }
}
