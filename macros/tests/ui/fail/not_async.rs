use switchboard::prelude::*;

#[switchboard::message("join")]
fn join(ch: Channel) {
    let _ = ch;
}

fn main() {}
