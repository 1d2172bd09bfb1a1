// The embed player: Spotify's iFrame API plays a playlist; progress, likes and skips go to Python.
// One ES module for both views: the Jupyter widget (anywidget's `model`) and the local page
// (embed_page.js gives it a model with the same get / on / send). Python decides what is logged:
// every answer carries the state (`model.get("state")`), and a song it has logged is never sent
// again; a reloaded page starts from the first song not logged.

const END_MARGIN_MS = 3000; // a pause this close to the end (or back at 0 after it) is the song's end
const PROGRESS_EVERY_MS = 1000; // the furthest position heard goes to Python at most this often

function loadIFrameAPI(url) {
  // The script calls window.onSpotifyIframeApiReady once: load it once per page, for every view.
  if (!window.__embedPlayerIFrameAPI) {
    window.__embedPlayerIFrameAPI = new Promise((resolve, reject) => {
      const previous = window.onSpotifyIframeApiReady;
      window.onSpotifyIframeApiReady = (api) => {
        resolve(api);
        if (typeof previous === "function") previous(api);
      };
      const script = document.createElement("script");
      script.src = url;
      script.async = true;
      script.onerror = () => {
        window.__embedPlayerIFrameAPI = undefined;
        reject(new Error(`could not load Spotify's player script from ${url}`));
      };
      document.head.appendChild(script);
    });
  }
  return window.__embedPlayerIFrameAPI;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function percent(share) {
  return `${Math.round(share * 100)} %`;
}

function render({ model, el }) {
  const root = element("div", "embed-player");
  const status = element("div", "ep-status");
  status.setAttribute("role", "status");
  const main = element("div", "ep-main");
  const frame = element("div", "ep-frame");
  const embed = element("div", "ep-embed");
  embed.appendChild(frame);
  const songs = element("table", "ep-songs");
  main.append(embed, songs);
  const buttons = element("div", "ep-buttons");
  const play = element("button", "ep-play", "▶ Play");
  const like = element("button", "ep-like", "♡ Like");
  const skip = element("button", "ep-skip", "Skip");
  const stop = element("button", "ep-stop", "■ Stop");
  buttons.append(play, like, skip, stop);
  root.append(status, main, buttons);
  el.appendChild(root);

  let controller = null;
  let loadedUri = null;
  let current = null; // {playlist_id, position, heard, duration, liked, playing, sentAt}
  let sentFinished = new Set(); // positions whose `finished` went out (Python may not have answered yet)
  let playlistId = null;
  let lost = false;
  let clicked = false; // the person pressed play on this page: later playlists start by themselves
  let problem = null;

  const state = () => model.get("state") || { songs: [] };
  const send = (message) => model.send(message);

  function pending(after) {
    const list = state().songs || [];
    for (let position = after + 1; position < list.length; position += 1) {
      if (!list[position].logged && !sentFinished.has(position)) return position;
    }
    return null;
  }

  function over() {
    const s = state();
    return lost || problem !== null || s.status === "finished" || s.status === "stopped";
  }

  function progress(force) {
    if (!current || current.finishing || !current.playing) return;
    const now = Date.now();
    if (!force && now - current.sentAt < PROGRESS_EVERY_MS) return;
    current.sentAt = now;
    send({ type: "progress", playlist_id: current.playlist_id, position: current.position,
           heard_ms: Math.round(current.heard), duration_ms: Math.round(current.duration) });
  }

  function start(position) {
    const song = state().songs[position];
    current = { playlist_id: playlistId, position, heard: song.heard_ms || 0, duration: 0,
                liked: !!song.liked, playing: false, paused: false, finishing: false, sentAt: 0 };
    if (controller) {
      if (loadedUri !== song.uri) controller.loadUri(song.uri);
      loadedUri = song.uri;
      controller.play();
    }
    draw();
  }

  function finish(how) {
    if (!current || current.finishing) return;
    current.finishing = true;
    const { position } = current;
    sentFinished.add(position);
    send({ type: "finished", playlist_id: current.playlist_id, position, heard_ms: Math.round(current.heard),
           duration_ms: Math.round(current.duration), liked: current.liked, ended: how === "ended",
           skipped: how === "skipped" });
    const next = pending(position);
    if (next === null) {
      current = null;
      if (controller) controller.pause();
      draw();
    } else {
      start(next);
    }
  }

  function onUpdate(event) {
    const data = (event && event.data) || {};
    if (!current || current.finishing || over()) return;
    if (data.duration > 0 && (!data.isPaused || current.playing)) current.duration = data.duration;
    current.paused = !!data.isPaused;
    if (!data.isPaused && !data.isBuffering) {
      current.playing = true;
      current.heard = Math.max(current.heard, data.position || 0);
    }
    const duration = current.duration;
    if (data.isPaused && current.playing && duration > 0 && current.heard >= duration - END_MARGIN_MS
        && (!data.position || data.position >= duration - END_MARGIN_MS)) {
      finish("ended");
      return;
    }
    progress(!!data.isPaused);
    draw();
  }

  function newPlaylist() {
    playlistId = state().playlist_id;
    sentFinished = new Set();
    current = null;
    const first = pending(-1);
    if (first === null || over()) return;
    const song = state().songs[first];
    if (controller && loadedUri !== song.uri) {
      controller.loadUri(song.uri);
      loadedUri = song.uri;
    }
    // Browsers let a page play only after a click on it (a reloaded page waits for one again).
    if (clicked && controller) start(first);
  }

  function onState() {
    if (state().playlist_id !== playlistId) newPlaylist();
    if (over() && controller) controller.pause();
    draw();
  }

  function drawStatus() {
    const s = state();
    const list = s.songs || [];
    const logged = list.filter((song) => song.logged).length;
    let text;
    if (problem) text = problem;
    else if (s.status === "finished" || s.status === "stopped") {
      text = `${s.message} (${logged} of ${list.length} songs).${s.note ? ` ${s.note}` : ""}`;
    }
    else if (lost) text = "The player's server has stopped: what you heard before is logged. You can close this page.";
    else if (!list.length) text = s.message || "Waiting for a playlist…";
    else if (!controller) text = "Loading Spotify's player…";
    else if (!current) text = pending(-1) === null ? "Logging the last song…" : "Press ▶ Play to start the playlist.";
    else {
      const song = list[current.position];
      const heard = current.duration > 0 ? ` · ${percent(Math.min(1, current.heard / current.duration))} heard` : "";
      text = `Playing ${current.position + 1} of ${list.length}: ${song.name || song.id}${heard} · ${logged} logged`;
    }
    status.textContent = text;
  }

  function draw() {
    const s = state();
    const list = s.songs || [];
    songs.replaceChildren();
    const head = element("tr");
    for (const title of ["#", "song", "artist", "policy's probability", "heard"]) head.appendChild(element("th", "", title));
    songs.appendChild(head);
    list.forEach((song, position) => {
      const row = element("tr", current && current.position === position ? "ep-current" : "");
      row.dataset.position = String(position);
      row.dataset.id = song.id;
      const probability = song.probability === null || song.probability === undefined ? "start" : percent(song.probability);
      let heard = "";
      if (song.logged) {
        heard = `✓ ${percent(song.logged.percentage_listened)}`;
        if (song.logged.preview_duration_ms) heard += ` of a ${Math.round(song.logged.preview_duration_ms / 1000)} s preview`;
        if (song.logged.liked === 1) heard += " ♥";
        else if (song.logged.liked === 0) heard += " skipped";
      } else if (current && current.position === position) {
        heard = current.liked ? "▶ ♥" : "▶";
      }
      for (const text of [String(position + 1), song.name || song.id, song.artist || "", probability, heard]) {
        row.appendChild(element("td", "", text));
      }
      row.lastChild.className = "ep-heard";
      songs.appendChild(row);
    });
    const playable = controller && !over() && list.length > 0;
    play.disabled = !playable || (current === null && pending(-1) === null);
    like.disabled = !playable || !current;
    skip.disabled = !playable || !current;
    stop.disabled = lost || problem !== null || !list.length || s.status === "finished" || s.status === "stopped";
    like.textContent = current && current.liked ? "♥ Liked" : "♡ Like";
    play.textContent = current && !current.paused ? "❚❚ Pause" : "▶ Play";
    drawStatus();
  }

  play.addEventListener("click", () => {
    if (!controller) return;
    clicked = true;
    if (!current) {
      const first = pending(-1);
      if (first !== null) start(first);
    } else {
      controller.togglePlay();
    }
  });
  like.addEventListener("click", () => {
    if (!current) return;
    current.liked = !current.liked;
    send({ type: "like", playlist_id: current.playlist_id, position: current.position, liked: current.liked });
    draw();
  });
  skip.addEventListener("click", () => finish("skipped"));
  stop.addEventListener("click", () => {
    if (controller) controller.pause();
    send({ type: "stop" });
  });

  const onConnection = () => {
    lost = model.get("connection") === "lost";
    if (lost && controller) controller.pause();
    draw();
  };
  model.on("change:state", onState);
  model.on("change:connection", onConnection);
  const onHide = () => progress(true);
  window.addEventListener("pagehide", onHide);

  draw();
  loadIFrameAPI(model.get("api_url"))
    .then((api) => {
      const first = pending(-1);
      const list = state().songs || [];
      const uri = list.length ? list[first === null ? 0 : first].uri : undefined;
      const options = { width: "100%", height: 152 };
      if (uri) options.uri = uri;
      api.createController(frame, options, (created) => {
        controller = created;
        loadedUri = uri || null;
        // removeListener does not work in the shipped script: each handler is added once, here.
        controller.addListener("playback_update", onUpdate);
        playlistId = null;
        onState();
      });
    })
    .catch((error) => {
      problem = `${error.message}. Nothing can play; nothing was logged.`;
      draw();
    });

  return () => {
    window.removeEventListener("pagehide", onHide);
    model.off("change:state", onState);
    model.off("change:connection", onConnection);
    if (controller) controller.destroy();
  };
}

export default { render };
