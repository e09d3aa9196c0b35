use switchboard::prelude::*;

#[derive(Clone)]
struct User;
#[derive(Clone)]
struct Admin;

#[switchboard::message("join")]
async fn join(ch: Channel<Admin>) {
    let _ = ch;
}

fn main() {
    let _ = ChannelRoute::<User>::new("/ws").message(join);
}
