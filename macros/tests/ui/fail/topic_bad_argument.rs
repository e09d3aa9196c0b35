use switchboard::session::SessionCtx;

#[switchboard::session]
#[derive(Default)]
struct Game;

#[switchboard::session_handlers]
impl Game {
    #[topic_message]
    async fn on_publish(&mut self, ch: &SessionCtx<Self>, p: String) {
        let _ = (ch, p);
    }
}

fn main() {}
