//! The route table and the one dispatch every host of handlers uses: connection actors,
//! session channels (whose forwarder is the fallback), the serverless function and, through
//! the same table type, the gateway's routing of events.
//!
//! A frame becomes a [`Dispatch`]: the handler to run with its body, or the error frame to
//! answer with right away. The special cases are variants, not route names: [`Fallback`] says
//! whether unrouted messages (and, for API Gateway's `$default`, text frames that are not
//! messages at all) have a handler.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;

use crate::error::{ChannelError, MAX_ECHO};
use crate::handler::{Body, MessageHandler, BINARY_ROUTE};
use crate::meter::RouteLabel;
use crate::protocol::{self, Envelope, RouteKey};

/// A routed handler as the table holds it.
pub(crate) type Handler<S> = Arc<dyn MessageHandler<S>>;

/// Route name → `H`. A handful of routes are found faster by comparing strings than by
/// hashing, so small tables are a list.
pub(crate) enum RouteTable<H> {
    Few(Vec<(Arc<str>, H)>),
    Many(HashMap<Arc<str>, H>),
}

impl<H> Default for RouteTable<H> {
    fn default() -> Self {
        RouteTable::Few(Vec::new())
    }
}

impl<H> RouteTable<H> {
    const FEW: usize = 8;

    /// A table of `routes`; a later entry for the same name replaces an earlier one.
    pub(crate) fn new(routes: impl IntoIterator<Item = (Box<str>, H)>) -> Self {
        // Shared names: metrics label series with them without copying.
        let map: HashMap<Arc<str>, H> = routes
            .into_iter()
            .map(|(name, h)| (Arc::from(name), h))
            .collect();
        if map.len() <= Self::FEW {
            RouteTable::Few(map.into_iter().collect())
        } else {
            RouteTable::Many(map)
        }
    }

    /// The handler and the table's own name for it.
    pub(crate) fn get_named(&self, route: &str) -> Option<(&Arc<str>, &H)> {
        match self {
            RouteTable::Few(v) => v.iter().find(|(r, _)| &**r == route).map(|(r, h)| (r, h)),
            RouteTable::Many(m) => m.get_key_value(route),
        }
    }
}

/// What answers messages whose route has no handler of its own.
pub(crate) enum Fallback<S> {
    /// Nobody: they get `unknown_route`.
    None,
    /// A handler for routed messages without a handler (`$default`).
    Messages(Handler<S>),
    /// A handler that also takes text frames that are not messages (not JSON, no route key, a
    /// bad `ref`) instead of the `bad_json` / `missing_route` / `bad_ref` error frame, the way
    /// API Gateway hands whatever it cannot route to `$default`. Such a frame reaches it as
    /// `Body::Binary` holding the frame's text (valid UTF-8): there is no envelope to give it.
    /// The gateway's forwarder is one.
    Raw(Handler<S>),
}

impl<S> Clone for Fallback<S> {
    fn clone(&self) -> Self {
        match self {
            Fallback::None => Fallback::None,
            Fallback::Messages(h) => Fallback::Messages(h.clone()),
            Fallback::Raw(h) => Fallback::Raw(h.clone()),
        }
    }
}

impl<S> Fallback<S> {
    fn handler(&self) -> Option<&Handler<S>> {
        match self {
            Fallback::None => None,
            Fallback::Messages(h) | Fallback::Raw(h) => Some(h),
        }
    }
}

/// One frame from a client, before routing.
pub(crate) enum Inbound {
    Text(ByteString),
    Binary(Bytes),
}

/// Identifies the message a result answers: what an error frame needs. Holding the decoded
/// envelope (a reference count) keeps the success path free of copies.
pub(crate) enum Answering {
    Message(Envelope),
    /// A message that could not be decoded, with its `ref` if it had one.
    Rejected(Option<String>),
    Binary,
}

impl Answering {
    pub(crate) fn reference(&self) -> Option<&str> {
        match self {
            Answering::Message(env) => env.reference(),
            Answering::Rejected(r) => r.as_deref(),
            Answering::Binary => None,
        }
    }

    pub(crate) fn route(&self) -> Option<&str> {
        match self {
            Answering::Message(env) => Some(env.route()),
            Answering::Rejected(_) => None,
            Answering::Binary => Some(BINARY_ROUTE),
        }
    }

    /// The error frame answering this message. Internal errors are logged here, with the
    /// connection and route, since the client only hears `internal`.
    pub(crate) fn error_frame(
        &self,
        conn: impl std::fmt::Display,
        route_field: &str,
        err: &ChannelError,
    ) -> ByteString {
        if let ChannelError::Internal(detail) = err {
            tracing::error!("connection {conn}: route {:?}: {detail}", self.route());
        }
        // An over-long route (an unknown one: registered routes are short) is not echoed.
        let route = self.route().filter(|r| r.len() <= MAX_ECHO);
        protocol::encode_error(self.reference(), route_field, route, err)
    }
}

/// Where one frame goes.
pub(crate) enum Dispatch<'a, S> {
    /// Run `handler` with `body`; its result answers `answering`.
    Call {
        handler: &'a Handler<S>,
        body: Body,
        answering: Answering,
        /// Which route answers, as metrics and traces name it.
        route: RouteLabel<'a>,
    },
    /// Answer with an error frame and run nothing.
    Reject {
        answering: Answering,
        error: ChannelError,
        route: RouteLabel<'a>,
    },
}

/// A channel's routes: the table, the fallback, the binary handler and where the route key
/// sits in a message.
pub(crate) struct Router<S> {
    routes: RouteTable<Handler<S>>,
    fallback: Fallback<S>,
    binary: Option<Handler<S>>,
    route_key: RouteKey,
    /// The reply field name (the route key's last segment), computed once.
    route_field: Arc<str>,
}

impl<S> Router<S> {
    pub(crate) fn new(
        routes: RouteTable<Handler<S>>,
        fallback: Fallback<S>,
        binary: Option<Handler<S>>,
        route_key: RouteKey,
    ) -> Self {
        let route_field = Arc::from(route_key.reply_field());
        Router {
            routes,
            fallback,
            binary,
            route_key,
            route_field,
        }
    }

    /// The field replies without `ref` name the route in.
    pub(crate) fn route_field(&self) -> &Arc<str> {
        &self.route_field
    }

    /// Routes one frame.
    pub(crate) fn dispatch(&self, inbound: Inbound) -> Dispatch<'_, S> {
        self.dispatch_hinted(inbound, None)
    }

    /// Routes one frame, trying the route named by `hint` before the message's own (a
    /// gateway's event may carry a route it chose by its own rules).
    pub(crate) fn dispatch_hinted(&self, inbound: Inbound, hint: Option<&str>) -> Dispatch<'_, S> {
        match inbound {
            Inbound::Text(text) => {
                let raw = match &self.fallback {
                    Fallback::Raw(h) => Some((h, text.clone())),
                    _ => None,
                };
                let env = match Envelope::decode(text, &self.route_key) {
                    Ok(env) => env,
                    Err(rejected) => {
                        let answering = Answering::Rejected(rejected.reference);
                        return match raw {
                            Some((handler, text)) => Dispatch::Call {
                                handler,
                                body: Body::Binary(text.into_bytes()),
                                answering,
                                route: RouteLabel::Default,
                            },
                            None => Dispatch::Reject {
                                answering,
                                error: rejected.error,
                                route: RouteLabel::Invalid,
                            },
                        };
                    }
                };
                let handler = hint
                    .and_then(|h| self.routes.get_named(h))
                    .or_else(|| self.routes.get_named(env.route()))
                    .map(|(name, h)| (RouteLabel::Named(name), h))
                    .or_else(|| self.fallback.handler().map(|h| (RouteLabel::Default, h)));
                match handler {
                    Some((route, handler)) => Dispatch::Call {
                        handler,
                        body: Body::Text(env.clone()),
                        answering: Answering::Message(env),
                        route,
                    },
                    None => Dispatch::Reject {
                        error: ChannelError::unknown_route(env.route()),
                        answering: Answering::Message(env),
                        route: RouteLabel::Unknown,
                    },
                }
            }
            Inbound::Binary(bytes) => match &self.binary {
                Some(handler) => Dispatch::Call {
                    handler,
                    body: Body::Binary(bytes),
                    answering: Answering::Binary,
                    route: RouteLabel::Binary,
                },
                None => Dispatch::Reject {
                    answering: Answering::Rejected(None),
                    error: ChannelError::BinaryUnsupported,
                    route: RouteLabel::Binary,
                },
            },
        }
    }

    /// The label of the route that answered a dispatched message (metrics look it up again
    /// when the handler is done rather than carry it through the handler's run).
    pub(crate) fn label_of(&self, answering: &Answering) -> RouteLabel<'_> {
        match answering {
            Answering::Message(env) => self
                .routes
                .get_named(env.route())
                .map_or(RouteLabel::Default, |(name, _)| RouteLabel::Named(name)),
            Answering::Binary => RouteLabel::Binary,
            Answering::Rejected(_) => RouteLabel::Default,
        }
    }

    /// What a frame that is refused before routing (the inbound queue is full) answers.
    pub(crate) fn answering(&self, inbound: &Inbound) -> Answering {
        match inbound {
            Inbound::Binary(_) => Answering::Binary,
            Inbound::Text(text) => match Envelope::decode(text.clone(), &self.route_key) {
                Ok(env) => Answering::Message(env),
                Err(rejected) => Answering::Rejected(rejected.reference),
            },
        }
    }
}
