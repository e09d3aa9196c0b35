#[derive(Default)]
struct Game;

#[switchboard::session_handlers]
impl Game {}

fn main() {}
