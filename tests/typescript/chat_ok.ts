// The chat channel used as its generated types allow (tests/typescript.rs): tsc must accept it.
import { Switchboard } from "../../framework/js/switchboard.js";
import type { Channel as Chat, Message } from "../../examples/chat/static/channel";

const sb = new Switchboard<Chat>("ws://127.0.0.1:8080/ws/chat");

export async function talk(): Promise<string> {
  await sb.connect();
  const nick: string = await sb.request("nick", { nick: "ada" });
  const said: null = await sb.request("say", { room: "lobby", text: "hello" });
  sb.send("typing", { room: "lobby" });
  const room = await sb.subscribe("room:lobby", { last: 50 });
  room.on("message", (m: Message, meta) => console.log(m.nick, m.text, m.at, meta.seq));
  room.on("typing", (t) => console.log(t.nick, t.typing ? "typing" : "stopped"));
  room.on("announcement", (a) => console.log(a.text.toUpperCase()));
  room.on("presence_diff", (diff) => console.log(Object.keys(diff.joins), Object.keys(diff.leaves)));
  room.on("*", (data, meta) => console.log(meta.event, data));
  const joined = await sb.request("subscribe", { topic: "room:rust", last: 10 });
  await room.unsubscribe();
  const code: Chat["errors"] = "nickname_taken";
  return `${nick} ${said} ${joined.topic} ${joined.seq ?? 0} ${code}`;
}

// Without the type parameter the client is as untyped as before.
const untyped = new Switchboard("ws://127.0.0.1:8080/ws/echo");
export const anything: Promise<number> = untyped
  .request("echo", { whatever: 1 }, { timeout: 1000 })
  .then((reply) => reply.whatever);
untyped.on("tick", (data) => console.log(data.any.field));
