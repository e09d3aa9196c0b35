//! The server under soak, run in a child process (`soak --serve`): a Switchboard channel like
//! the chat example's rooms. `/ws` takes the built-in `subscribe` to `room:*` topics
//! (`allow_join`), with presence when asked (each member under its connection id); the hub's
//! memory engine keeps the last 50 messages of each room, as the chat's does. `GET /heap`
//! answers the heap in use: `live L` (bytes the program holds, counted by the bench's
//! allocator), and with glibc `glibc_used U glibc_held H` (`mallinfo2`).

use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use switchboard::engine::{HistoryConfig, MemoryEngine};
use switchboard::prelude::*;

use super::alloc::{self, Kind};
use crate::support::spawn;

/// Connections the channel accepts (the default cap is 10 000 per channel).
const MAX_CONNECTIONS: usize = 100_000;

/// Presence: each member under its connection id.
async fn presence(ch: Channel<()>, _topic: String) -> Option<(String, serde_json::Value)> {
    Some((ch.id().to_string(), serde_json::Value::Null))
}

async fn heap() -> HttpResponse {
    let mut body = format!("live {}", alloc::live());
    if let Some((used, held)) = alloc::glibc_info() {
        body += &format!(" glibc_used {used} glibc_held {held}");
    }
    HttpResponse::Ok().body(body)
}

/// Serves until killed: `workers` actix-web workers, on `port` (0: any), announced on stdout.
/// Under `glibc-trim`, a thread calls `malloc_trim(0)` every 5 s.
pub fn serve(kind: Kind, port: u16, workers: usize, with_presence: bool) -> std::io::Result<()> {
    if kind == Kind::GlibcTrim {
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_secs(5));
            alloc::trim();
        });
    }
    actix_web::rt::System::new().block_on(async move {
        let engine = MemoryEngine::builder()
            .history("room:*", HistoryConfig::last(50))
            .build();
        let hub = Hub::with_engine(engine);
        let mut channel = ChannelRoute::<()>::new("/ws")
            .allow_join("room:*")
            .max_connections(MAX_CONNECTIONS);
        if with_presence {
            channel = channel.presence(presence);
        }
        let server = HttpServer::new(move || {
            App::new()
                .app_data(hub.clone())
                .service(channel.clone())
                .route("/heap", web::get().to(heap))
        })
        .workers(workers)
        .bind(("127.0.0.1", port))?;
        spawn::announce_port(&server.addrs())?;
        server.run().await
    })
}
