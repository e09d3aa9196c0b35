//! Tracing: an app's subscriber sees a span per connection (channel, id, peer) and, inside it,
//! a span per message (route, ref, outcome), the way `tracing-actix-web` or an OpenTelemetry
//! exporter would record them. The subscriber here records what it is told; it is installed
//! process-wide, as the connection actors run on the server's worker threads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::App;
use serde_json::json;
use switchboard::prelude::*;
use switchboard::testing::TestServer;
use switchboard_suite::handlers::echo;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// One recorded span: its name, its fields, its parent's id.
#[derive(Clone, Debug, Default)]
struct Recorded {
    name: &'static str,
    fields: HashMap<&'static str, String>,
    parent: Option<u64>,
}

#[derive(Clone, Default)]
struct Recorder {
    spans: Arc<Mutex<HashMap<u64, Recorded>>>,
    next: Arc<AtomicU64>,
}

struct Fields<'a>(&'a mut HashMap<&'static str, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("switchboard")
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut rec = Recorded {
            name: attrs.metadata().name(),
            parent: attrs.parent().map(Id::into_u64),
            ..Recorded::default()
        };
        attrs.record(&mut Fields(&mut rec.fields));
        self.spans.lock().unwrap().insert(id, rec);
        Id::from_u64(id)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some(rec) = self.spans.lock().unwrap().get_mut(&span.into_u64()) {
            values.record(&mut Fields(&mut rec.fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[actix_rt::test]
async fn a_subscriber_sees_connection_and_message_spans() {
    let recorder = Recorder::default();
    tracing::subscriber::set_global_default(recorder.clone()).unwrap();
    let srv =
        TestServer::start(|| App::new().service(ChannelRoute::<()>::new("/traced").message(echo)));
    let mut c = srv.connect("/traced").await.unwrap();
    let id = c.request("whoami", json!(null)).await.err();
    assert!(id.is_some(), "whoami is not a route here: an error reply");
    assert_eq!(
        c.request("echo", json!({"x": 1})).await.unwrap(),
        json!({"x": 1})
    );

    let spans = recorder.spans.lock().unwrap().clone();
    let (&conn_id, conn) = spans
        .iter()
        .find(|(_, s)| s.name == "connection")
        .expect("a connection span");
    assert_eq!(conn.fields["channel"], "/traced");
    assert!(conn.fields["id"].len() >= 16, "{conn:?}");
    assert_eq!(conn.fields["peer"], "127.0.0.1");
    let messages: Vec<&Recorded> = spans.values().filter(|s| s.name == "message").collect();
    let echoed = messages
        .iter()
        .find(|s| s.fields.get("route").map(String::as_str) == Some("echo"))
        .expect("the echo message's span");
    assert_eq!(echoed.parent, Some(conn_id), "inside the connection's span");
    assert_eq!(echoed.fields["outcome"], "ok");
    assert_eq!(echoed.fields["ref"], "2");
}
