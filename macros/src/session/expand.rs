//! A [`State`] into its marker impl, a [`Block`] into the struct's `Session` impl.
//!
//! A method's arguments are found by kind, not by position or name
//! (`switchboard::__private::arg_kind!`): a `&SessionCtx<Self>` (however it is spelled) gets
//! the session's context; the others are extracted from the message, and the last one may be
//! the payload. A `#[topic_message]` method's arguments are the context and the
//! `Publication`, told apart by type (`TopicArg`); `on_connect` and `on_disconnect` take the
//! context only.

use proc_macro2::TokenStream as TokenStream2;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ImplItemFn, Type};

use super::parse::{Block, Role, State};
use crate::util::{arg_types, connect_query, return_span, route_types, slot_call};

pub(crate) fn state(state: &State) -> TokenStream2 {
    let name = &state.ident;
    quote! {
        #state
        impl ::switchboard::session::SessionState for #name {}
    }
}

pub(crate) fn handlers(block: &Block) -> TokenStream2 {
    let self_ty = &*block.block.self_ty;
    let method = |role: fn(&Role) -> bool| {
        block
            .methods
            .iter()
            .find(|m| role(&m.role))
            .map(|m| &m.func)
    };
    let entries: Vec<(TokenStream2, TokenStream2)> = block
        .methods
        .iter()
        .filter_map(|m| match &m.role {
            Role::Route(route) => Some(entry(self_ty, quote!(#route), &m.func)),
            Role::Binary => Some(entry(
                self_ty,
                quote!(::switchboard::handler::BINARY_ROUTE),
                &m.func,
            )),
            _ => None,
        })
        .collect();
    let routes = entries.iter().map(|(route, _)| route);
    let methods = entries.iter().map(|(_, method)| method);
    let create = create(self_ty, method(|r| matches!(r, Role::Create)));
    let on_connect = method(|r| matches!(r, Role::Connect)).map(|f| {
        let result = quote_spanned! {return_span(&f.sig)=>
            ::switchboard::__private::unit_result(__out)
        };
        lifecycle(
            self_ty,
            f,
            quote!(::std::result::Result<(), ::switchboard::ChannelError>),
            result,
        )
    });
    let on_disconnect = method(|r| matches!(r, Role::Disconnect)).map(|f| {
        let unit = quote_spanned!(return_span(&f.sig)=> ::switchboard::__private::unit(__out));
        lifecycle(self_ty, f, quote!(()), unit)
    });
    let on_publish = method(|r| matches!(r, Role::Topic)).map(|f| topic(self_ty, f));
    let route_types = block.methods.iter().filter_map(|m| match &m.role {
        Role::Route(route) => {
            let types = arg_types(&m.func.sig);
            let types = route_types(types.last().copied(), &m.func.sig.output);
            Some(quote!((#route, #types)))
        }
        _ => None,
    });
    let create_args = method(|r| matches!(r, Role::Create))
        .map(|f| arg_types(&f.sig))
        .unwrap_or_default();
    let query = connect_query(&create_args, false);
    let stripped = &block.block;
    quote! {
        #stripped

        /// The session's route methods as plain functions (`SessionMethod`s).
        #[doc(hidden)]
        impl #self_ty {
            #(#methods)*
        }

        impl ::switchboard::session::Session for #self_ty {
            fn create(
                __req: ::switchboard::__private::actix_web::HttpRequest,
            ) -> ::switchboard::__private::BoxFuture<::std::result::Result<Self, ::switchboard::ChannelError>> {
                #create
            }

            fn routes() -> ::std::vec::Vec<::switchboard::session::SessionRoute<Self>> {
                ::std::vec![#(#routes),*]
            }

            #on_connect
            #on_disconnect
            #on_publish

            ::switchboard::__private::if_schema! {
                fn route_types() -> ::std::vec::Vec<(&'static str, ::switchboard::schema::RouteTypes)> {
                    ::std::vec![#(#route_types),*]
                }
            }
            #query
        }
    }
}

/// The route table entry that runs method `f` for `route` (an expression), and the plain
/// function it points to (an associated function, so that argument types may say `Self`).
fn entry(self_ty: &Type, route: TokenStream2, f: &ImplItemFn) -> (TokenStream2, TokenStream2) {
    let name = &f.sig.ident;
    let wrapper = quote::format_ident!("__switchboard_route_{}", name);
    let types = arg_types(&f.sig);
    // The last argument may be the payload.
    let args = types.iter().enumerate().map(|(i, ty)| {
        let value = slot_call(ty, i + 1 == types.len(), "session", quote!(__ctx, __req));
        quote!(#value?)
    });
    let reply = quote_spanned! {return_span(&f.sig)=>
        ::switchboard::__private::reply(__req, __out)
    };
    let method = quote! {
        #[allow(unreachable_code, unused_variables)]
        fn #wrapper<'a>(
            __self: &'a mut Self,
            __ctx: &'a ::switchboard::session::SessionCtx<Self>,
            __req: &'a ::switchboard::session::SessionRequest<Self>,
        ) -> ::switchboard::session::SessionFuture<
            'a,
            ::std::result::Result<::switchboard::Reply, ::switchboard::ChannelError>,
        > {
            ::std::boxed::Box::pin(async move {
                let __out = <#self_ty>::#name(__self, #(#args),*).await;
                #reply
            })
        }
    };
    let route = quote!(::switchboard::session::SessionRoute::new(#route, <#self_ty>::#wrapper));
    (route, method)
}

/// The body of `Session::create`: the `create` method with actix-web extractors as its
/// arguments, else `Default`.
fn create(self_ty: &Type, f: Option<&ImplItemFn>) -> TokenStream2 {
    let Some(f) = f else {
        return quote_spanned! {self_ty.span()=>
            ::std::boxed::Box::pin(async move {
                ::std::result::Result::Ok(::switchboard::__private::default_session::<#self_ty>())
            })
        };
    };
    let args = arg_types(&f.sig).into_iter().map(|ty| {
        quote_spanned!(ty.span()=> ::switchboard::__private::connect_arg::<#ty>(&__req).await?)
    });
    let created = quote_spanned! {return_span(&f.sig)=>
        ::switchboard::__private::created::<#self_ty, _>(__out)
    };
    quote! {
        ::std::boxed::Box::pin(async move {
            let __out = <#self_ty>::create(#(#args),*).await;
            #created
        })
    }
}

/// `on_connect` or `on_disconnect`: method `f` with the context as each argument, `finish`
/// making its `__out` the trait method's `output`.
fn lifecycle(
    self_ty: &Type,
    f: &ImplItemFn,
    output: TokenStream2,
    finish: TokenStream2,
) -> TokenStream2 {
    let name = &f.sig.ident;
    let args = arg_types(&f.sig)
        .into_iter()
        .map(|ty| quote_spanned!(ty.span()=> __ctx));
    quote! {
        fn #name<'a>(
            &'a mut self,
            __ctx: &'a ::switchboard::session::SessionCtx<Self>,
        ) -> ::switchboard::session::SessionFuture<'a, #output> {
            ::std::boxed::Box::pin(async move {
                let __out = <#self_ty>::#name(self, #(#args),*).await;
                #finish
            })
        }
    }
}

/// `on_publish`: the `#[topic_message]` method `f`, given the context and the publication.
fn topic(self_ty: &Type, f: &ImplItemFn) -> TokenStream2 {
    let name = &f.sig.ident;
    let args = arg_types(&f.sig).into_iter().map(|ty| {
        quote_spanned! {ty.span()=>
            <#ty as ::switchboard::__private::TopicArg<'_, Self>>::pick(__ctx, &__publication)
        }
    });
    let unit = quote_spanned!(return_span(&f.sig)=> ::switchboard::__private::unit(__out));
    quote! {
        fn on_publish<'a>(
            &'a mut self,
            __ctx: &'a ::switchboard::session::SessionCtx<Self>,
            __publication: ::switchboard::engine::Publication,
        ) -> ::switchboard::session::SessionFuture<'a, ()> {
            ::std::boxed::Box::pin(async move {
                let __out = <#self_ty>::#name(self, #(#args),*).await;
                #unit
            })
        }
    }
}
