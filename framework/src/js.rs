//! The JavaScript client, shipped with the framework: a dependency-free ES module that speaks
//! the channel protocol (requests with `ref` and a timeout, pushes, topics with recovery,
//! presence, automatic reconnect). See `docs/js-client.md`.
//!
//! ```
//! use actix_web::App;
//!
//! // Serves the module at /switchboard.js, for `import { Switchboard } from "/switchboard.js"`.
//! let app = App::new().service(switchboard::js::service("/switchboard.js"));
//! ```

use actix_web::dev::{AppService, HttpServiceFactory};
use actix_web::http::header;
use actix_web::{web, HttpResponse};

/// The client module's source.
pub const CLIENT: &str = include_str!("../js/switchboard.js");

/// An actix-web service serving [`CLIENT`] at `path` as `text/javascript`.
pub fn service(path: &str) -> impl HttpServiceFactory {
    ClientService(path.to_owned())
}

struct ClientService(String);

impl HttpServiceFactory for ClientService {
    fn register(self, config: &mut AppService) {
        let resource = web::resource(self.0).route(web::get().to(|| async {
            HttpResponse::Ok()
                .insert_header((header::CONTENT_TYPE, "text/javascript; charset=utf-8"))
                .insert_header((header::CACHE_CONTROL, "no-cache"))
                .body(CLIENT)
        }));
        HttpServiceFactory::register(resource, config)
    }
}
