// The page: one WebSocket to the app (/events). Each generation gets a section with a card
// per requested image; the app's messages (README, "The web page") move the cards along.

const $ = (selector, root = document) => root.querySelector(selector);
const generations = new Map(); // id -> {section, cards, number, started}
let socket = null;
let counter = 0;

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/events`);
  socket.addEventListener("open", () => setConnection("open", "connected"));
  socket.addEventListener("close", () => {
    setConnection("closed", "disconnected, retrying…");
    for (const generation of generations.values()) {
      if (generation.section.dataset.state === "running") {
        finish(generation, "failed", "the page lost its connection");
      }
    }
    setTimeout(connect, 2000);
  });
  socket.addEventListener("message", (message) => receive(JSON.parse(message.data)));
}

function setConnection(state, text) {
  const element = $("#connection");
  element.dataset.state = state;
  element.textContent = text;
}

function receive(message) {
  if (message.type === "hello") {
    setConnection("open", `connected · ${message.endpoints.join(", ")}`);
    return;
  }
  if (message.type === "figures") {
    showFigures(message);
    return;
  }
  const generation = generations.get(message.id);
  if (!generation) return;
  if (message.type === "accepted") {
    generation.section.dataset.task = message.taskUUID;
    setStatus(generation, "waiting for the server");
  } else if (message.type === "rejected") {
    finish(generation, "failed", errorText(message.error));
  } else if (message.type === "cancelled") {
    finish(generation, "cancelled", "cancelled");
  } else if (message.type === "event") {
    onEvent(generation, message.event);
  }
}

function onEvent(generation, event) {
  if (event.type === "progress") {
    const card = generation.cards[event.imageIndex];
    if (!card || card.dataset.state === "done") return;
    card.dataset.state = "running";
    card.dataset.maxStep = Math.max(Number(card.dataset.maxStep), event.step);
    $(".status", card).textContent = `step ${event.step} of ${event.steps}`;
    $(".bar span", card).style.width = `${(100 * event.step) / event.steps}%`;
    if (event.preview) {
      const preview = $(".preview", card);
      preview.src = event.preview;
      preview.hidden = false;
    }
    setStatus(generation, "generating");
  } else if (event.type === "imageReady") {
    showImage(generation.cards[event.index], event.image);
  } else if (event.type === "taskDone") {
    const seconds = ((performance.now() - generation.started) / 1000).toFixed(1);
    finish(generation, "done", `done in ${seconds} s`);
  } else if (event.type === "taskFailed") {
    finish(generation, "failed", errorText(event.error));
  }
}

function showImage(card, image) {
  if (!card) return;
  const img = $(".image", card);
  img.addEventListener("load", () => {
    card.dataset.state = "done";
    $(".preview", card).hidden = true;
    $(".status", card).textContent = `${img.naturalWidth} × ${img.naturalHeight}`;
  }, { once: true });
  img.addEventListener("error", () => {
    card.dataset.state = "failed";
    $(".status", card).textContent = "the image could not be loaded";
  }, { once: true });
  img.alt = `image ${card.dataset.index}`;
  img.src = image.url;
  img.hidden = false;
  card.dataset.image = image.imageUUID;
  const meta = $(".meta", card);
  meta.textContent = image.seed ? `seed ${image.seed} · ` : "";
  const link = document.createElement("a");
  link.href = image.url;
  link.target = "_blank";
  link.rel = "noopener";
  link.textContent = "open";
  meta.append(link);
}

function finish(generation, state, text) {
  generation.section.dataset.state = state;
  setStatus(generation, text);
  $(".cancel", generation.section).disabled = true;
  for (const card of generation.cards) {
    if (card.dataset.image || card.dataset.state === "done") continue;
    card.dataset.state = state === "done" ? "failed" : state;
    $(".status", card).textContent = state === "done" ? "no image" : text;
  }
}

function setStatus(generation, text) {
  $(".status", generation.section).textContent = text;
}

function errorText(error) {
  return error.errorMessage || error.message || "failed";
}

function showFigures(figures) {
  $("#fig-in-flight").textContent = figures.inFlight;
  $("#fig-done").textContent = figures.done;
  $("#fig-failed").textContent = figures.failed;
  $("#fig-rate").textContent = figures.tasksPerSecond.toFixed(1);
  const list = $("#fig-connections");
  list.replaceChildren(...figures.connections.map((connection) => {
    const item = document.createElement("li");
    item.dataset.state = connection.state;
    const where = document.createElement("span");
    where.textContent = connection.endpoint;
    const state = document.createElement("span");
    state.textContent = `${connection.state} · ${connection.inFlight}`;
    item.append(where, state);
    return item;
  }));
}

function request(form) {
  const data = new FormData(form);
  const [width, height] = String(data.get("size")).split("x").map(Number);
  const number = (name) => (data.get(name) === "" ? null : Number(data.get(name)));
  return {
    prompt: String(data.get("prompt")).trim(),
    numberResults: number("numberResults") ?? 1,
    width,
    height,
    seed: number("seed"),
    steps: number("steps"),
    negativePrompt: String(data.get("negativePrompt")).trim() || null,
    model: String(data.get("model")).trim() || null,
  };
}

function addGeneration(id, message) {
  const section = $("#generation-template").content.firstElementChild.cloneNode(true);
  section.dataset.id = id;
  section.dataset.state = "running";
  $(".prompt", section).textContent = message.prompt;
  const grid = $(".grid", section);
  grid.style.setProperty("--ratio", `${message.width} / ${message.height}`);
  const count = Math.max(1, Math.min(Number(message.numberResults) || 1, 20));
  const cards = [];
  for (let index = 0; index < count; index += 1) {
    const card = $("#card-template").content.firstElementChild.cloneNode(true);
    card.dataset.index = index;
    cards.push(card);
    grid.append(card);
  }
  $(".cancel", section).addEventListener("click", () => {
    socket.send(JSON.stringify({ type: "cancel", id }));
  });
  $(".empty")?.remove();
  $("#generations").prepend(section);
  generations.set(id, { section, cards, started: performance.now() });
}

$("#form").addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  const message = request(submitted.target);
  counter += 1;
  const id = `g${counter}`;
  addGeneration(id, message);
  socket.send(JSON.stringify({ type: "generate", id, ...message }));
});

connect();
