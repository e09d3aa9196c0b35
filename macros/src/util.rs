//! What every macro shares: the error path, argument lists, and the code that asks the
//! compiler what an argument is.

use proc_macro::TokenStream;
use proc_macro2::{Ident, Span, TokenStream as TokenStream2};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{FnArg, ReturnType, Signature, Type};

/// Runs a macro's stages on `item`. On error the user's item is emitted again (as `restore`
/// gives it back) beside the `compile_error!`, so that the rest of the crate still resolves its
/// names and IDEs keep working.
pub(crate) fn expand(
    item: TokenStream,
    stages: impl FnOnce(TokenStream2) -> syn::Result<TokenStream2>,
    restore: impl FnOnce(TokenStream2) -> TokenStream2,
) -> TokenStream {
    let item = TokenStream2::from(item);
    match stages(item.clone()) {
        Ok(out) => out.into(),
        Err(err) => {
            let item = restore(item);
            let err = err.to_compile_error();
            quote!(#item #err).into()
        }
    }
}

/// Fails unless the attribute `#[switchboard::<name>]` was given no arguments.
pub(crate) fn no_args(attr: &TokenStream2, name: &str) -> syn::Result<()> {
    if attr.is_empty() {
        return Ok(());
    }
    Err(syn::Error::new_spanned(
        attr,
        format!("`#[switchboard::{name}]` takes no arguments"),
    ))
}

/// The types of a signature's arguments, `self` aside.
pub(crate) fn arg_types(sig: &Signature) -> Vec<&Type> {
    sig.inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(pat) => Some(&*pat.ty),
            FnArg::Receiver(_) => None,
        })
        .collect()
}

/// Where errors about what a function returns point: its return type, or its name.
pub(crate) fn return_span(sig: &Signature) -> Span {
    match &sig.output {
        ReturnType::Default => sig.ident.span(),
        ReturnType::Type(_, ty) => ty.span(),
    }
}

/// The argument kind of `ty` (`switchboard::__private::kind`), as a const generic argument:
/// the compiler classifies the type by the traits it implements, and by whether it is `last`.
pub(crate) fn arg_kind(ty: &Type, last: bool) -> TokenStream2 {
    quote_spanned!(ty.span()=> { ::switchboard::__private::arg_kind!(#ty, #last) })
}

/// `Slot::<ty, kind>::<item>(<args>)`, spanned so that errors about the call underline the
/// whole of `ty`.
pub(crate) fn slot_call(ty: &Type, last: bool, item: &str, args: TokenStream2) -> TokenStream2 {
    let kind = arg_kind(ty, last);
    let (start, end) = spans(ty);
    let path = quote_spanned!(start=> ::switchboard::__private::Slot::<#ty, #kind>::);
    let item = Ident::new(item, end);
    quote_spanned!(end=> #path #item(#args))
}

/// The spans of the first and last tokens of `ty`. The compiler spans a path from the span
/// of its first token to that of its last, so code whose first and last tokens carry these
/// spans underlines the whole of `ty` in errors (a proc macro cannot join spans itself).
pub(crate) fn spans(ty: &Type) -> (Span, Span) {
    let mut tokens = ty.to_token_stream().into_iter();
    let start = tokens.next().map_or_else(Span::call_site, |t| t.span());
    let end = tokens.last().map_or(start, |t| t.span());
    (start, end)
}

/// `ty` as written, for messages: `Result<Joined, ChannelError>`.
pub(crate) fn type_text(ty: &Type) -> String {
    let mut text = ty.to_token_stream().to_string();
    for (spaced, tight) in [
        (" :: ", "::"),
        (":: ", "::"),
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ,", ","),
        ("& ", "&"),
        ("( ", "("),
        (" )", ")"),
    ] {
        text = text.replace(spaced, tight);
    }
    text
}

/// The items that describe a handler's types (`switchboard::schema`), emitted only when
/// switchboard's `schema` feature is on: `payload` is the last argument's type, if any, and
/// `reply` the return type.
pub(crate) fn route_types(payload: Option<&Type>, reply: &ReturnType) -> TokenStream2 {
    let payload = match payload {
        Some(ty) => {
            let text = type_text(ty);
            quote_spanned! {ty.span()=>
                ::switchboard::schema::TypeDesc::new(#text, ::switchboard::__private::payload_shape!(#ty))
            }
        }
        None => quote! {
            ::switchboard::schema::TypeDesc::new("()", ::switchboard::schema::Shape::None)
        },
    };
    let reply = match reply {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => quote!(#ty),
    };
    let text = match syn::parse2::<Type>(reply.clone()) {
        Ok(ty) => type_text(&ty),
        Err(_) => reply.to_string(),
    };
    quote! {
        ::switchboard::schema::RouteTypes {
            payload: #payload,
            reply: ::switchboard::schema::TypeDesc::new(#text, ::switchboard::__private::reply_shape!(#reply)),
        }
    }
}

/// The item that describes the query parameters a connect handler (or a session's `create`)
/// reads, from its `web::Query<T>` argument if it has one; only with the `schema` feature.
pub(crate) fn connect_query(types: &[&Type], receiver: bool) -> TokenStream2 {
    let n = types.len();
    let receiver = receiver.then(|| quote!(&self));
    let candidates = types.iter().map(|ty| {
        let text = type_text(ty);
        quote_spanned! {ty.span()=>
            ::switchboard::schema::TypeDesc::new(#text, ::switchboard::__private::query_shape!(#ty))
        }
    });
    quote! {
        ::switchboard::__private::if_schema! {
            fn connect_query(#receiver) -> ::std::option::Option<::switchboard::schema::TypeDesc> {
                let __candidates: [::switchboard::schema::TypeDesc; #n] = [#(#candidates),*];
                __candidates
                    .into_iter()
                    .find(|t| !::std::matches!(t.shape, ::switchboard::schema::Shape::None))
            }
        }
    }
}
