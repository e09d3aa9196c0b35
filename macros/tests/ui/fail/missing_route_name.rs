use switchboard::prelude::*;

#[switchboard::message]
async fn join(ch: Channel) {
    let _ = ch;
}

fn main() {}
