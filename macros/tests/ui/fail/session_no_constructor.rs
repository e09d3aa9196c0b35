#[switchboard::session]
struct Game {
    score: u32,
}

#[switchboard::session_handlers]
impl Game {}

fn main() {
    let _ = Game { score: 0 }.score;
}
