// Three misuses of the chat channel (tests/typescript.rs): tsc must report exactly these.
import { Switchboard } from "../../framework/js/switchboard.js";
import type { Channel as Chat } from "../../examples/chat/static/channel";

const sb = new Switchboard<Chat>("ws://127.0.0.1:8080/ws/chat");

export async function wrong(): Promise<void> {
  await sb.request("nickname", { nick: "ada" });
  await sb.request("say", { room: "lobby", txt: "hello" });
  const nick = await sb.request("nick", { nick: "ada" });
  nick.toFixed(2);
}
