// The local page's side of the player: a model with anywidget's get / on / off / send, over
// server-sent events (the state) and POST /event (the page's events, answered with the state).
import player from "./embed_player.js";

const token = new URLSearchParams(location.search).get("token") || "";
const withToken = (path) => `${path}?token=${encodeURIComponent(token)}`;

class PageModel {
  constructor() {
    this.values = {};
    this.handlers = {};
  }
  get(key) {
    return this.values[key];
  }
  set(key, value) {
    this.values[key] = value;
    for (const handler of this.handlers[`change:${key}`] || []) handler();
  }
  on(name, handler) {
    (this.handlers[name] = this.handlers[name] || []).push(handler);
  }
  off(name, handler) {
    this.handlers[name] = (this.handlers[name] || []).filter((known) => known !== handler);
  }
  take(answer) {
    // Answers and the event stream can cross: keep the newest state.
    if (answer.api_url !== undefined) this.values.api_url = answer.api_url;
    const known = this.values.state;
    if (!known || answer.state.version >= known.version) this.set("state", answer.state);
  }
  lost() {
    if (this.get("connection") !== "lost") this.set("connection", "lost");
  }
  async send(message) {
    // keepalive: an event sent as the page closes or reloads still arrives.
    try {
      const response = await fetch(withToken("/event"), {
        method: "POST", keepalive: true, headers: { "Content-Type": "application/json" },
        body: JSON.stringify(message),
      });
      if (response.status === 503) throw new Error("the server has stopped");
      const answer = await response.json();
      if (response.ok) this.take(answer);
      else console.error("the player's server refused an event:", answer.error);
    } catch (error) {
      await this.check();
    }
  }
  async check() {
    // The event stream or a request failed: is the server still there?
    try {
      const response = await fetch(withToken("/state"), { cache: "no-store" });
      if (!response.ok) throw new Error(`status ${response.status}`);
      this.take(await response.json());
    } catch (error) {
      this.lost();
    }
  }
}

async function main() {
  const model = new PageModel();
  const first = await fetch(withToken("/state"), { cache: "no-store" });
  if (!first.ok) {
    document.getElementById("player").textContent = "This address is not the player's: open the one the command printed.";
    return;
  }
  model.take(await first.json());
  player.render({ model, el: document.getElementById("player") });
  const events = new EventSource(withToken("/events"));
  events.onmessage = (message) => model.take(JSON.parse(message.data));
  events.onerror = () => {
    events.close();
    model.check();
  };
}

main();
