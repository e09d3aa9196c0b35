//! A gateway: a WebSocket channel whose messages are handled by a function over HTTP (like AWS
//! API Gateway with a Lambda integration), plus the connections API the function (and the AWS
//! SDKs) use to reach its clients.
//!
//! Run it with `cargo run --example function` beside it:
//!
//! ```sh
//! cargo run --example gateway -- --function-url http://127.0.0.1:9000/fn \
//!     --function-token fn-token --api-token api-token
//! cargo run --example function -- --port 9000 \
//!     --connections-url http://127.0.0.1:8080 --connections-token api-token --token fn-token
//! ```
//!
//! then open `ws://127.0.0.1:8080/ws?name=ann` and send `{"type":"join","ref":1,"data":{"room":"rust"}}`.
//! With `--access-key`/`--secret-key`, the connections API also accepts the AWS SDKs'
//! signatures: `boto3.client("apigatewaymanagementapi", endpoint_url="http://127.0.0.1:8080",
//! region_name="us-east-1", ...)`. Without a token or keys it serves only direct clients on
//! this host (and will not start on another address).

use std::time::Duration;

use actix_web::{App, HttpServer};
use clap::Parser;
use switchboard::serverless::connections_api::ConnectionsApi;
use switchboard::serverless::gateway::Gateway;
use switchboard::Hub;

#[derive(Parser, Debug)]
#[command(about = "A Switchboard gateway forwarding a channel to a function")]
struct Args {
    /// Address to bind.
    #[arg(long, env = "GATEWAY_BIND", default_value = "127.0.0.1")]
    bind: String,
    /// Port (0: any free one).
    #[arg(long, env = "GATEWAY_PORT", default_value_t = 8080)]
    port: u16,
    /// Where the function takes events.
    #[arg(long, env = "FUNCTION_URL", default_value = "http://127.0.0.1:9000/fn")]
    function_url: String,
    /// Token sent to the function.
    #[arg(long, env = "FUNCTION_TOKEN")]
    function_token: Option<String>,
    /// Bearer token the connections API accepts.
    #[arg(long, env = "API_TOKEN")]
    api_token: Option<String>,
    /// An AWS-style access key id the connections API accepts signatures from.
    #[arg(long, env = "API_ACCESS_KEY", requires = "secret_key")]
    access_key: Option<String>,
    /// Its secret.
    #[arg(long, env = "API_SECRET_KEY")]
    secret_key: Option<String>,
    /// Seconds the function may take per event.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Read answers shaped like Lambda proxy responses (`{"statusCode","body"}`) as the status
    /// and body they hold: for a function written for API Gateway's Lambda integration.
    #[arg(long)]
    lambda_proxy: bool,
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    env_logger::init_from_env(env_logger::Env::default().default_filter_or("info"));
    let args = Args::parse();
    let mut gateway = Gateway::new(&args.function_url)
        .timeout(Duration::from_secs_f64(args.timeout))
        .routes(["join", "leave", "say", "tell"]);
    if let Some(t) = &args.function_token {
        gateway = gateway.function_token(t);
    }
    if args.lambda_proxy {
        gateway = gateway.lambda_proxy_responses();
    }
    let channel = gateway.channel("/ws").allow_any_origin();
    let mut api = ConnectionsApi::new().region("us-east-1");
    if let Some(t) = &args.api_token {
        api = api.bearer_token(t);
    }
    if let (Some(k), Some(s)) = (&args.access_key, &args.secret_key) {
        api = api.credentials([(k.clone(), s.clone())]);
    }
    let hub = Hub::new();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(hub.clone())
            .service(channel.clone())
            .service(api.clone())
    })
    .bind((args.bind.as_str(), args.port))?;
    for addr in server.addrs() {
        log::info!(
            "gateway on ws://{addr}/ws → {}, connections API on http://{addr}/@connections",
            args.function_url
        );
        println!("listening on http://{addr}");
    }
    server.run().await
}
