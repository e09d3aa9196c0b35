use switchboard::prelude::*;

#[switchboard::on_connect]
async fn connect(req: ConnectRequest) {
    let _ = req;
}

fn main() {}
