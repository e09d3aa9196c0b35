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

/// Marks a struct as session state: `#[switchboard::session] struct Game { .. }`.
#[proc_macro_attribute]
pub fn session(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item2: TokenStream2 = item.clone().into();
    let result = (|| -> syn::Result<TokenStream2> {
        if !attr.is_empty() {
            return Err(syn::Error::new(
                Span::call_site(),
                "`#[switchboard::session]` takes no arguments",
            ));
        }
        let input = syn::parse::<syn::DeriveInput>(item)?;
        if !input.generics.params.is_empty() {
            return Err(syn::Error::new_spanned(
                &input.generics,
                "session types cannot be generic",
            ));
        }
        let name = &input.ident;
        Ok(quote! {
            #input
            impl ::switchboard::session::SessionState for #name {}
        })
    })();
    match result {
        Ok(ts) => ts.into(),
        Err(err) => {
            let err = err.to_compile_error();
            quote!(#item2 #err).into()
        }
    }
}

/// Turns a session struct's `impl` block into its routes and lifecycle:
/// `#[message("route")]` methods, `on_connect`, `on_disconnect`, a `#[topic_message]` method,
/// an `#[on_binary]` method, and an optional `async fn create(..) -> Result<Self, E>`.
#[proc_macro_attribute]
pub fn session_handlers(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item2: TokenStream2 = item.clone().into();
    let result = (|| -> syn::Result<TokenStream2> {
        if !attr.is_empty() {
            return Err(syn::Error::new(
                Span::call_site(),
                "`#[switchboard::session_handlers]` takes no arguments",
            ));
        }
        let block = syn::parse::<syn::ItemImpl>(item.clone())?;
        session::expand(block)
    })();
    match result {
        Ok(ts) => ts.into(),
        Err(err) => {
            let err = err.to_compile_error();
            // Re-emit the block without the helper attributes, so that the only errors are
            // ours and the methods still resolve.
            let item = match syn::parse::<syn::ItemImpl>(item) {
                Ok(mut block) => {
                    session::strip_helpers(&mut block);
                    block.into_token_stream()
                }
                Err(_) => item2,
            };
            quote!(#item #err).into()
        }
    }
}

mod session {
    use super::*;
    use syn::{ImplItem, ImplItemFn, ItemImpl};

    enum Role {
        Route(LitStr),
        Binary,
        Topic,
        Connect,
        Disconnect,
        Create,
    }

    pub(super) fn strip_helpers(block: &mut ItemImpl) {
        for item in &mut block.items {
            if let ImplItem::Fn(f) = item {
                f.attrs.retain(|a| {
                    !["message", "topic_message", "on_binary"]
                        .iter()
                        .any(|n| a.path().is_ident(n))
                });
            }
        }
    }

    fn take_attr(f: &mut ImplItemFn, name: &str) -> Option<syn::Attribute> {
        let pos = f.attrs.iter().position(|a| a.path().is_ident(name))?;
        Some(f.attrs.remove(pos))
    }

    fn role(f: &mut ImplItemFn) -> syn::Result<Option<Role>> {
        if let Some(attr) = take_attr(f, "message") {
            let route: LitStr = attr.parse_args().map_err(|_| {
                syn::Error::new_spanned(&attr, "expected a route name: `#[message(\"route\")]`")
            })?;
            if route.value().is_empty() {
                return Err(syn::Error::new_spanned(
                    route,
                    "the route name cannot be empty",
                ));
            }
            return Ok(Some(Role::Route(route)));
        }
        if take_attr(f, "topic_message").is_some() {
            return Ok(Some(Role::Topic));
        }
        if take_attr(f, "on_binary").is_some() {
            return Ok(Some(Role::Binary));
        }
        Ok(match f.sig.ident.to_string().as_str() {
            "on_connect" => Some(Role::Connect),
            "on_disconnect" => Some(Role::Disconnect),
            "create" => Some(Role::Create),
            _ => None,
        })
    }

    fn is_ctx(ty: &Type) -> bool {
        match ty {
            Type::Reference(r) => last_segment_is(&r.elem, "SessionCtx"),
            _ => false,
        }
    }

    fn check_method(f: &ImplItemFn) -> syn::Result<()> {
        if f.sig.asyncness.is_none() {
            return Err(syn::Error::new_spanned(
                f.sig.fn_token,
                "session handlers must be `async fn`",
            ));
        }
        match f.sig.inputs.first() {
            Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_some() => Ok(()),
            Some(FnArg::Receiver(r)) => Err(syn::Error::new_spanned(
                r,
                "session handlers take `&mut self`",
            )),
            _ => Err(syn::Error::new_spanned(
                &f.sig.ident,
                "session handlers take `&mut self` first",
            )),
        }
    }

    fn typed_args(f: &ImplItemFn) -> Vec<&Type> {
        f.sig
            .inputs
            .iter()
            .filter_map(|i| match i {
                FnArg::Typed(p) => Some(&*p.ty),
                FnArg::Receiver(_) => None,
            })
            .collect()
    }

    pub(super) fn expand(mut block: ItemImpl) -> syn::Result<TokenStream2> {
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
        let self_ty = block.self_ty.clone();
        let mut routes = Vec::new();
        let mut binary = None;
        let mut topic = None;
        let mut connect = None;
        let mut disconnect = None;
        let mut create = None;
        for item in &mut block.items {
            let ImplItem::Fn(f) = item else { continue };
            let Some(role) = role(f)? else { continue };
            match role {
                Role::Create => {
                    if f.sig.asyncness.is_none() {
                        return Err(syn::Error::new_spanned(
                            f.sig.fn_token,
                            "`create` must be an `async fn`",
                        ));
                    }
                    if let Some(FnArg::Receiver(r)) = f.sig.inputs.first() {
                        return Err(syn::Error::new_spanned(
                            r,
                            "`create` builds the session: it takes no `self`",
                        ));
                    }
                    create = Some(f.clone());
                }
                Role::Route(r) => {
                    check_method(f)?;
                    routes.push((r, f.clone()));
                }
                Role::Binary => {
                    check_method(f)?;
                    binary = Some(f.clone());
                }
                Role::Topic => {
                    check_method(f)?;
                    topic = Some(f.clone());
                }
                Role::Connect => {
                    check_method(f)?;
                    connect = Some(f.clone());
                }
                Role::Disconnect => {
                    check_method(f)?;
                    disconnect = Some(f.clone());
                }
            }
        }

        let host = quote!(::switchboard::session::SessionHost<#self_ty>);

        // Arguments after `&mut self`: `&SessionCtx<Self>` gets the context, the last other
        // argument may be the payload, the rest are extractors.
        let call_args = |f: &ImplItemFn| -> Vec<TokenStream2> {
            let types = typed_args(f);
            let n = types.len();
            types
                .iter()
                .enumerate()
                .map(|(i, ty)| {
                    if is_ctx(ty) {
                        quote!(__ctx)
                    } else if i + 1 == n && !KNOWN_EXTRACTORS.iter().any(|k| last_segment_is(ty, k)) {
                        quote_spanned!(ty.span()=> ::switchboard::__private::last::<#ty, #host, _>(__req)?)
                    } else {
                        quote_spanned!(ty.span()=> ::switchboard::__private::parts::<#ty, #host>(__req)?)
                    }
                })
                .collect()
        };

        let route_arms = routes.iter().map(|(route, f)| {
            let name = &f.sig.ident;
            let args = call_args(f);
            let ret_span = match &f.sig.output {
                ReturnType::Default => f.sig.ident.span(),
                ReturnType::Type(_, t) => t.span(),
            };
            let reply = quote_spanned!(ret_span=> ::switchboard::__private::reply(__req, __out));
            quote! {
                #route => ::std::option::Option::Some(::std::boxed::Box::pin(async move {
                    let __out = <#self_ty>::#name(self, #(#args),*).await;
                    #reply
                })),
            }
        });
        let binary_arm = binary.as_ref().map(|f| {
            let name = &f.sig.ident;
            let args = call_args(f);
            quote! {
                "$binary" => ::std::option::Option::Some(::std::boxed::Box::pin(async move {
                    let __out = <#self_ty>::#name(self, #(#args),*).await;
                    ::switchboard::__private::reply(__req, __out)
                })),
            }
        });

        let create_fn = match &create {
            Some(f) => {
                let types = typed_args(f);
                let names: Vec<_> = (0..types.len())
                    .map(|i| format_ident!("__arg{i}"))
                    .collect();
                let extracts = types.iter().zip(&names).map(|(ty, a)| {
                    quote_spanned! {ty.span()=>
                        let #a = ::switchboard::__private::connect_arg::<#ty>(&__req).await?;
                    }
                });
                let ret_span = match &f.sig.output {
                    ReturnType::Default => f.sig.ident.span(),
                    ReturnType::Type(_, t) => t.span(),
                };
                let created = quote_spanned!(ret_span=> ::switchboard::__private::created::<#self_ty, _>(__out));
                quote! {
                    ::std::boxed::Box::pin(async move {
                        #(#extracts)*
                        let __out = <#self_ty>::create(#(#names),*).await;
                        #created
                    })
                }
            }
            None => quote_spanned! {self_ty.span()=>
                ::std::boxed::Box::pin(async move {
                    ::std::result::Result::Ok(::switchboard::__private::default_session::<#self_ty>())
                })
            },
        };

        let connect_fn = connect.as_ref().map(|f| {
            let ret_span = match &f.sig.output {
                ReturnType::Default => f.sig.ident.span(),
                ReturnType::Type(_, t) => t.span(),
            };
            let res = quote_spanned!(ret_span=> ::switchboard::__private::unit_result(__out));
            quote! {
                fn on_connect<'a>(
                    &'a mut self,
                    __ctx: &'a ::switchboard::session::SessionCtx<Self>,
                ) -> ::switchboard::session::SessionFuture<'a, ::std::result::Result<(), ::switchboard::Error>> {
                    ::std::boxed::Box::pin(async move {
                        let __out = <#self_ty>::on_connect(self, __ctx).await;
                        #res
                    })
                }
            }
        });
        let disconnect_fn = disconnect.as_ref().map(|_| {
            quote! {
                fn on_disconnect<'a>(
                    &'a mut self,
                    __ctx: &'a ::switchboard::session::SessionCtx<Self>,
                ) -> ::switchboard::session::SessionFuture<'a, ()> {
                    ::std::boxed::Box::pin(async move {
                        <#self_ty>::on_disconnect(self, __ctx).await
                    })
                }
            }
        });
        let topic_fn = topic.as_ref().map(|f| {
            let name = &f.sig.ident;
            let args = typed_args(f).into_iter().map(|ty| {
                if is_ctx(ty) {
                    quote!(__ctx)
                } else {
                    quote_spanned!(ty.span()=> __publication)
                }
            });
            quote! {
                fn on_publish<'a>(
                    &'a mut self,
                    __ctx: &'a ::switchboard::session::SessionCtx<Self>,
                    __publication: ::switchboard::engine::Publication,
                ) -> ::switchboard::session::SessionFuture<'a, ()> {
                    ::std::boxed::Box::pin(async move {
                        <#self_ty>::#name(self, #(#args),*).await
                    })
                }
            }
        });

        Ok(quote! {
            #block

            impl ::switchboard::session::Session for #self_ty {
                fn create(
                    __req: ::switchboard::__private::actix_web::HttpRequest,
                ) -> ::switchboard::__private::BoxFuture<::std::result::Result<Self, ::switchboard::Error>> {
                    #create_fn
                }

                #[allow(unreachable_code, unused_variables)]
                fn handle<'a>(
                    &'a mut self,
                    __ctx: &'a ::switchboard::session::SessionCtx<Self>,
                    __req: &'a ::switchboard::session::SessionRequest<Self>,
                ) -> ::std::option::Option<
                    ::switchboard::session::SessionFuture<'a, ::std::result::Result<::switchboard::Reply, ::switchboard::Error>>,
                > {
                    match __req.route() {
                        #(#route_arms)*
                        #binary_arm
                        _ => ::std::option::Option::None,
                    }
                }

                #connect_fn
                #disconnect_fn
                #topic_fn
            }
        })
    }
}
