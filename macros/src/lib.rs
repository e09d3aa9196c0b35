//! Procedural macros for `switchboard`. Use them through the `switchboard` crate:
//! `#[switchboard::message("route")]`, `#[switchboard::on_connect]`, ...
//!
//! Each macro turns an `async fn` into a unit struct of the same name implementing one of the
//! framework's handler traits, the way actix-web's route macros do. The generated code only
//! calls the framework's public API; all logic lives in the library. Misuse is reported with
//! spans on the user's code, and the original item is still emitted so IDEs keep working.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, ItemFn, LitStr, PathArguments, ReturnType, Token, Type};

/// A routed message handler: `#[switchboard::message("join")]`.
#[proc_macro_attribute]
pub fn message(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Message, attr, item)
}

/// The fallback handler (`$default` route).
#[proc_macro_attribute]
pub fn fallback(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Fallback, attr, item)
}

/// The binary-frame handler.
#[proc_macro_attribute]
pub fn on_binary(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Binary, attr, item)
}

/// The connect handler.
#[proc_macro_attribute]
pub fn on_connect(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Connect, attr, item)
}

/// The disconnect handler.
#[proc_macro_attribute]
pub fn on_disconnect(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Disconnect, attr, item)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Message,
    Fallback,
    Binary,
    Connect,
    Disconnect,
}

impl Kind {
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

/// `"route"`, `session = Type`, or both, comma-separated.
struct Args {
    route: Option<LitStr>,
    session: Option<Type>,
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
                let key: syn::Ident = input.parse()?;
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

fn expand(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let item2: TokenStream2 = item.clone().into();
    let result = syn::parse::<ItemFn>(item).and_then(|func| {
        let args = syn::parse::<Args>(attr)?;
        expand_fn(kind, args, func)
    });
    match result {
        Ok(ts) => ts.into(),
        // Keep the user's item beside the error so that the rest of the crate still resolves
        // its name and IDEs keep working.
        Err(err) => {
            let err = err.to_compile_error();
            quote!(#item2 #err).into()
        }
    }
}

fn validate(kind: Kind, args: &Args, func: &ItemFn) -> syn::Result<()> {
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
        if let FnArg::Receiver(r) = input {
            return Err(syn::Error::new_spanned(
                r,
                "channel handlers are free functions: `self` is not allowed here (stateful handlers belong in a session actor)",
            ));
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

/// The session type a handler is written for: `session = T`, else the `T` of a `Channel<T>`
/// argument (`()` for a bare `Channel`), else none (the handler fits any channel).
fn session_type(args: &Args, func: &ItemFn) -> Option<TokenStream2> {
    if let Some(t) = &args.session {
        return Some(t.to_token_stream());
    }
    for input in &func.sig.inputs {
        let FnArg::Typed(pat) = input else { continue };
        let Type::Path(tp) = &*pat.ty else { continue };
        let Some(last) = tp.path.segments.last() else {
            continue;
        };
        if last.ident != "Channel" {
            continue;
        }
        return Some(match &last.arguments {
            PathArguments::AngleBracketed(a) => match a.args.first() {
                Some(GenericArgument::Type(t)) => t.to_token_stream(),
                _ => quote!(()),
            },
            _ => quote!(()),
        });
    }
    None
}

/// Framework extractors that must never be read as the payload.
const KNOWN_EXTRACTORS: &[&str] = &[
    "Channel",
    "Data",
    "ConnectionId",
    "Route",
    "Binary",
    "Hub",
    "HttpRequest",
    "MessageRequest",
];

fn last_segment_is(ty: &Type, name: &str) -> bool {
    match ty {
        Type::Path(tp) => tp.path.segments.last().is_some_and(|s| s.ident == name),
        _ => false,
    }
}

fn expand_fn(kind: Kind, args: Args, func: ItemFn) -> syn::Result<TokenStream2> {
    validate(kind, &args, &func)?;
    let name = &func.sig.ident;
    let vis = &func.vis;
    let docs: Vec<_> = func
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .collect();
    let mut inner = func.clone();
    inner.attrs.retain(|a| !a.path().is_ident("doc"));
    inner.vis = syn::Visibility::Inherited;
    inner.sig.ident = format_ident!("__switchboard_handler");

    let types: Vec<&Type> = func
        .sig
        .inputs
        .iter()
        .filter_map(|i| match i {
            FnArg::Typed(p) => Some(&*p.ty),
            FnArg::Receiver(_) => None,
        })
        .collect();
    let arg_names: Vec<_> = (0..types.len())
        .map(|i| format_ident!("__arg{i}"))
        .collect();
    let ret_span = match &func.sig.output {
        ReturnType::Default => func.sig.ident.span(),
        ReturnType::Type(_, t) => t.span(),
    };

    let session = session_type(&args, &func);
    let (impl_generics, s_ty) = match &session {
        Some(t) => (quote!(), t.clone()),
        None => (quote!(<__S: 'static>), quote!(__S)),
    };
    let call_inner = quote!(__switchboard_handler(#(#arg_names),*).await);

    let out = match kind {
        Kind::Message | Kind::Fallback | Kind::Binary => {
            let route = match kind {
                Kind::Message => {
                    let lit = args.route.as_ref().map(LitStr::value).unwrap_or_default();
                    quote!(#lit)
                }
                Kind::Fallback => quote!("$default"),
                _ => quote!("$binary"),
            };
            let n = types.len();
            let extracts = types
                .iter()
                .zip(&arg_names)
                .enumerate()
                .map(|(i, (ty, a))| {
                    let is_last = i + 1 == n;
                    // Some extractors are also `Deserialize` (`web::Data<T>` when `T` is,
                    // `ConnectionId`); in last position they are still extractors.
                    if is_last && !KNOWN_EXTRACTORS.iter().any(|n| last_segment_is(ty, n)) {
                        quote_spanned! {ty.span()=>
                            let #a = ::switchboard::__private::last::<#ty, #s_ty, _>(&__req)?;
                        }
                    } else {
                        quote_spanned! {ty.span()=>
                            let #a = ::switchboard::__private::parts::<#ty, #s_ty>(&__req)?;
                        }
                    }
                });
            let reply = quote_spanned! {ret_span=>
                ::switchboard::__private::reply(&__req, __out)
            };
            quote! {
                #(#docs)*
                #[allow(non_camel_case_types)]
                #[derive(Clone, Copy, Debug)]
                #vis struct #name;

                impl #impl_generics ::switchboard::MessageHandler<#s_ty> for #name {
                    fn route(&self) -> &str {
                        #route
                    }

                    fn call(
                        &self,
                        __req: ::switchboard::MessageRequest<#s_ty>,
                    ) -> ::switchboard::__private::BoxFuture<
                        ::std::result::Result<::switchboard::Reply, ::switchboard::Error>,
                    > {
                        #inner
                        ::std::boxed::Box::pin(async move {
                            #(#extracts)*
                            let __out = #call_inner;
                            #reply
                        })
                    }
                }
            }
        }
        Kind::Disconnect => {
            let extracts = types.iter().zip(&arg_names).map(|(ty, a)| {
                quote_spanned! {ty.span()=>
                    let #a = ::switchboard::__private::parts::<#ty, #s_ty>(&__req);
                    let #a = match #a {
                        ::std::result::Result::Ok(v) => v,
                        ::std::result::Result::Err(e) => {
                            ::switchboard::__private::log_disconnect_error(&e);
                            return;
                        }
                    };
                }
            });
            let unit = quote_spanned! {ret_span=> ::switchboard::__private::unit(__out) };
            quote! {
                #(#docs)*
                #[allow(non_camel_case_types)]
                #[derive(Clone, Copy, Debug)]
                #vis struct #name;

                impl #impl_generics ::switchboard::DisconnectHandler<#s_ty> for #name {
                    fn call(
                        &self,
                        __req: ::switchboard::MessageRequest<#s_ty>,
                    ) -> ::switchboard::__private::BoxFuture<()> {
                        #inner
                        ::std::boxed::Box::pin(async move {
                            #(#extracts)*
                            let __out = #call_inner;
                            #unit
                        })
                    }
                }
            }
        }
        Kind::Connect => {
            let ReturnType::Type(_, ret) = &func.sig.output else {
                unreachable!("validated above")
            };
            let extracts = types.iter().zip(&arg_names).map(|(ty, a)| {
                quote_spanned! {ty.span()=>
                    let #a = ::switchboard::__private::connect_arg::<#ty>(&__req).await?;
                }
            });
            let (impl_generics, s_ty, where_clause) = match &session {
                Some(t) => (quote!(), t.clone(), quote!()),
                None => (
                    quote!(<__S: 'static>),
                    quote!(__S),
                    quote_spanned!(ret.span()=> where #ret: ::switchboard::__private::IntoSession<__S>),
                ),
            };
            let into = quote_spanned! {ret.span()=>
                ::switchboard::__private::into_session::<#s_ty, _>(__out)
            };
            quote! {
                #(#docs)*
                #[allow(non_camel_case_types)]
                #[derive(Clone, Copy, Debug)]
                #vis struct #name;

                impl #impl_generics ::switchboard::ConnectHandler<#s_ty> for #name #where_clause {
                    fn call(
                        &self,
                        __req: ::switchboard::__private::actix_web::HttpRequest,
                    ) -> ::switchboard::__private::BoxFuture<
                        ::std::result::Result<::std::option::Option<#s_ty>, ::switchboard::Error>,
                    > {
                        #inner
                        ::std::boxed::Box::pin(async move {
                            #(#extracts)*
                            let __out = #call_inner;
                            #into
                        })
                    }
                }
            }
        }
    };
    Ok(out)
}
