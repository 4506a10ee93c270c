// The case page's film viewer: plain JavaScript on a canvas, no library.
//
// - The film as the model was given it ("as sent", an 8-bit PNG at the display's size) is
//   drawn first; the stored values at full resolution (film.bin, web/films.py) are fetched
//   on demand: the first window/level drag or preset, or a zoom past the display image.
// - Window/level: presets (as sent, the header's windows, auto, full range) and a drag
//   (horizontal: width, vertical: level), applied through a 65,536-entry table.
// - The heatmap is a layer of its own (toggle, opacity); its colours were fixed by the
//   server on one scale for every case.
// - Zoom (wheel, pinch, buttons) and pan (drag, or shift-drag / middle button / touch).
(function () {
  "use strict";

  const figure = document.getElementById("viewer");
  const stage = document.getElementById("stage");
  const img = document.getElementById("film");
  if (!figure || !stage || !img) {
    return;
  }
  const heatToggle = document.getElementById("heat-toggle");
  const heatOpacity = document.getElementById("heat-opacity");
  const preset = document.getElementById("wl-preset");
  const readout = document.getElementById("wl-readout");
  const invertButton = document.getElementById("invert");

  const canvas = document.createElement("canvas");
  canvas.className = "film-canvas";
  canvas.tabIndex = 0;
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", img.alt + " (viewer: arrow keys pan, + and − zoom)");
  const ctx = canvas.getContext("2d");

  const view = {
    base: null, // what is drawn: the display <img> or the windowed full-resolution canvas
    filmW: 0, // film units: the first display image's pixels (every source is drawn in them)
    filmH: 0,
    scale: 1, // CSS px per film unit
    tx: 0,
    ty: 0,
    fitted: true,
    heat: null,
    heatOn: heatToggle ? heatToggle.checked : false,
    heatAlpha: heatOpacity ? Number(heatOpacity.value) / 100 : 0.7,
    userInvert: false,
  };
  const film = {
    state: "none", // none | loading | ready | failed
    header: null,
    table: null,
    values: null,
    lut: new Uint32Array(65536),
    canvas: null,
    image: null,
    window: null, // {low, high} in stored-value units; null: as sent
    waiters: [],
  };

  // -- drawing ----------------------------------------------------------------------------
  let frame = 0;
  function draw() {
    if (frame) {
      return;
    }
    frame = window.requestAnimationFrame(function () {
      frame = 0;
      paint();
    });
  }
  function paint() {
    const dpr = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(stage.clientWidth * dpr));
    const height = Math.max(1, Math.round(stage.clientHeight * dpr));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
      if (view.fitted) {
        fit(false);
      }
    }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, width, height);
    if (!view.base) {
      return;
    }
    ctx.setTransform(dpr * view.scale, 0, 0, dpr * view.scale, dpr * view.tx, dpr * view.ty);
    // past 3 screen pixels per film pixel, show the pixels as they are
    const native = film.state === "ready" ? film.header.width / view.filmW : 1;
    ctx.imageSmoothingEnabled = view.scale * dpr / native < 3;
    ctx.filter = view.userInvert ? "invert(1)" : "none";
    ctx.drawImage(view.base, 0, 0, view.filmW, view.filmH);
    ctx.filter = "none";
    if (view.heat && view.heatOn && view.heatAlpha > 0) {
      ctx.imageSmoothingEnabled = true;
      ctx.globalAlpha = view.heatAlpha;
      ctx.drawImage(view.heat, 0, 0, view.filmW, view.filmH);
      ctx.globalAlpha = 1;
    }
  }
  function fit(redraw) {
    if (!view.filmW) {
      return;
    }
    const width = stage.clientWidth;
    const height = stage.clientHeight;
    view.scale = Math.min(width / view.filmW, height / view.filmH);
    view.tx = (width - view.filmW * view.scale) / 2;
    view.ty = (height - view.filmH * view.scale) / 2;
    view.fitted = true;
    stage.classList.remove("zoomed");
    if (redraw !== false) {
      draw();
    }
  }
  function zoom(factor, cx, cy) {
    if (!view.filmW) {
      return;
    }
    if (cx === undefined) {
      cx = stage.clientWidth / 2;
      cy = stage.clientHeight / 2;
    }
    const fitScale = Math.min(stage.clientWidth / view.filmW, stage.clientHeight / view.filmH);
    const scale = Math.max(fitScale / 4, Math.min(view.scale * factor, fitScale * 64));
    view.tx = cx - (cx - view.tx) * (scale / view.scale);
    view.ty = cy - (cy - view.ty) * (scale / view.scale);
    view.scale = scale;
    view.fitted = false;
    stage.classList.toggle("zoomed", scale > fitScale * 1.01);
    // past the display image's own pixels, fetch the film at full resolution
    const dpr = window.devicePixelRatio || 1;
    if (scale * dpr > 1.2 && film.state === "none") {
      loadFilm();
    }
    draw();
  }
  function pan(dx, dy) {
    view.tx += dx;
    view.ty += dy;
    view.fitted = false;
    draw();
  }

  // -- the full-resolution stored values ------------------------------------------------------
  function loadFilm() {
    if (film.state === "ready") {
      return Promise.resolve();
    }
    if (film.state === "loading") {
      return new Promise(function (resolve) {
        film.waiters.push(resolve);
      });
    }
    film.state = "loading";
    setReadout("Loading the full-resolution film…");
    return fetch(figure.dataset.film, { credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.arrayBuffer();
      })
      .then(function (buffer) {
        readFilm(buffer);
        film.state = "ready";
        fillPresets();
        render();
        film.waiters.splice(0).forEach(function (resolve) {
          resolve();
        });
      })
      .catch(function (error) {
        film.state = "failed";
        setReadout("The full-resolution film could not be loaded (" + error.message + ").");
        film.waiters.splice(0).forEach(function (resolve) {
          resolve();
        });
      });
  }
  function readFilm(buffer) {
    const bytes = new Uint8Array(buffer);
    const magic = String.fromCharCode.apply(null, bytes.subarray(0, 8));
    if (magic !== "CXRFILM1") {
      throw new Error("not a film");
    }
    const view32 = new DataView(buffer);
    const length = view32.getUint32(8, true);
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(12, 12 + length)));
    let offset = 12 + length;
    const table = bytes.slice(offset, offset + header.display_length);
    offset += header.display_length;
    offset += offset % 2;
    const count = header.width * header.height;
    film.header = header;
    film.table = table;
    film.values = new Uint16Array(buffer, offset, count);
    film.canvas = document.createElement("canvas");
    film.canvas.width = header.width;
    film.canvas.height = header.height;
    film.image = film.canvas.getContext("2d").createImageData(header.width, header.height);
  }
  function buildLut() {
    const lut = film.lut;
    const table = film.table;
    const opaque = 0xff000000;
    if (!film.window) {
      for (let v = 0; v < 65536; v += 1) {
        const g = v < table.length ? table[v] : table[table.length - 1];
        lut[v] = opaque | (g << 16) | (g << 8) | g;
      }
      return;
    }
    const low = film.window.low;
    const span = Math.max(1e-6, film.window.high - low);
    const inverted = film.header.inverted;
    for (let v = 0; v < 65536; v += 1) {
      let t = (v - low) / span;
      t = t < 0 ? 0 : t > 1 ? 1 : t;
      if (inverted) {
        t = 1 - t;
      }
      const g = Math.round(t * 255);
      lut[v] = opaque | (g << 16) | (g << 8) | g;
    }
  }
  function render() {
    if (film.state !== "ready") {
      return;
    }
    buildLut();
    const out = new Uint32Array(film.image.data.buffer);
    const values = film.values;
    const lut = film.lut;
    for (let i = 0; i < values.length; i += 1) {
      out[i] = lut[values[i]];
    }
    film.canvas.getContext("2d").putImageData(film.image, 0, 0);
    view.base = film.canvas;
    describeWindow();
    draw();
  }

  // -- window / level ---------------------------------------------------------------------------
  function setReadout(text) {
    if (readout) {
      readout.textContent = text;
    }
  }
  function describeWindow() {
    if (!film.window) {
      setReadout("As sent" + (film.state === "ready" ? " · full resolution" : ""));
      return;
    }
    const header = film.header;
    const center = (film.window.low + film.window.high) / 2;
    const width = film.window.high - film.window.low;
    if (header.slope !== null && header.units === "stored") {
      const c = header.slope * center + header.intercept;
      const w = Math.abs(header.slope) * width;
      setReadout("W " + Math.round(w) + " / L " + Math.round(c) + " (modality units)");
    } else if (header.units === "display") {
      setReadout("W " + (width / 257).toFixed(0) + " / L " + (center / 257).toFixed(0) + " (display levels)");
    } else {
      setReadout("W " + Math.round(width) + " / L " + Math.round(center) + " (stored values)");
    }
  }
  function fillPresets() {
    if (!preset) {
      return;
    }
    preset.replaceChildren();
    const sent = document.createElement("option");
    sent.value = "as-sent";
    sent.textContent = "1 · As sent (what the model saw)";
    preset.appendChild(sent);
    film.header.windows.forEach(function (w, index) {
      const option = document.createElement("option");
      option.value = String(index);
      option.textContent = String(index + 2) + " · " + w.name;
      preset.appendChild(option);
    });
    const custom = document.createElement("option");
    custom.value = "custom";
    custom.textContent = "Custom (dragged)";
    custom.hidden = true;
    preset.appendChild(custom);
    preset.value = film.window ? "custom" : "as-sent";
  }
  function choose(value) {
    return loadFilm().then(function () {
      if (film.state !== "ready") {
        return;
      }
      if (value === "as-sent") {
        film.window = null;
      } else if (value === "load") {
        film.window = null;
      } else if (value !== "custom") {
        const w = film.header.windows[Number(value)];
        if (!w) {
          return;
        }
        film.window = { low: w.low, high: w.high };
      }
      if (preset) {
        preset.value = film.window ? value : "as-sent";
      }
      render();
    });
  }
  function startingWindow() {
    // a drag from "as sent" starts at the header's first window, else the automatic one
    const windows = film.header.windows;
    const first = windows.find(function (w) {
      return w.name.indexOf("Header") === 0;
    }) || windows[0];
    return { low: first.low, high: first.high };
  }
  function adjustWindow(dx, dy) {
    if (film.state !== "ready") {
      return;
    }
    if (!film.window) {
      film.window = startingWindow();
    }
    const full = film.header.windows[film.header.windows.length - 1];
    const range = Math.max(1, full.high - full.low);
    const step = range / 600; // a 600 px drag spans the film's whole range
    let center = (film.window.low + film.window.high) / 2 + dy * step;
    let width = Math.max(1, film.window.high - film.window.low + dx * step * 2);
    film.window = { low: center - width / 2, high: center + width / 2 };
    if (preset) {
      const custom = preset.querySelector('option[value="custom"]');
      if (custom) {
        custom.hidden = false;
      }
      preset.value = "custom";
    }
    scheduleRender();
  }
  let pendingRender = 0;
  function scheduleRender() {
    if (pendingRender) {
      return;
    }
    pendingRender = window.requestAnimationFrame(function () {
      pendingRender = 0;
      render();
    });
  }

  // -- pointers: drag, pinch, wheel ---------------------------------------------------------------
  const pointers = new Map();
  let mode = null;
  let pinch = null;
  function tool() {
    const checked = figure.querySelector('input[name="tool"]:checked');
    return checked ? checked.value : "wl";
  }
  function local(event) {
    const box = canvas.getBoundingClientRect();
    return { x: event.clientX - box.left, y: event.clientY - box.top };
  }
  canvas.addEventListener("pointerdown", function (event) {
    canvas.setPointerCapture(event.pointerId);
    pointers.set(event.pointerId, local(event));
    if (pointers.size === 2) {
      const [a, b] = Array.from(pointers.values());
      pinch = { distance: Math.hypot(a.x - b.x, a.y - b.y), scale: view.scale };
      mode = "pinch";
      return;
    }
    const panning =
      event.pointerType === "touch" || tool() === "pan" || event.shiftKey || event.button === 1;
    mode = panning ? "pan" : "wl";
    if (mode === "wl") {
      loadFilm();
    }
  });
  canvas.addEventListener("pointermove", function (event) {
    if (!pointers.has(event.pointerId)) {
      return;
    }
    const before = pointers.get(event.pointerId);
    const now = local(event);
    pointers.set(event.pointerId, now);
    if (mode === "pinch" && pointers.size === 2) {
      const [a, b] = Array.from(pointers.values());
      const distance = Math.hypot(a.x - b.x, a.y - b.y);
      zoom((pinch.scale * distance) / pinch.distance / view.scale, (a.x + b.x) / 2, (a.y + b.y) / 2);
    } else if (mode === "pan") {
      pan(now.x - before.x, now.y - before.y);
    } else if (mode === "wl") {
      adjustWindow(now.x - before.x, now.y - before.y);
    }
  });
  function release(event) {
    pointers.delete(event.pointerId);
    if (pointers.size < 2) {
      pinch = null;
    }
    if (pointers.size === 0) {
      mode = null;
    }
  }
  canvas.addEventListener("pointerup", release);
  canvas.addEventListener("pointercancel", release);
  canvas.addEventListener("dblclick", function () {
    fit();
  });
  canvas.addEventListener(
    "wheel",
    function (event) {
      event.preventDefault();
      const at = local(event);
      zoom(Math.exp(-event.deltaY * 0.0015), at.x, at.y);
    },
    { passive: false }
  );
  canvas.addEventListener("keydown", function (event) {
    const steps = { ArrowLeft: [40, 0], ArrowRight: [-40, 0], ArrowUp: [0, 40], ArrowDown: [0, -40] };
    const step = steps[event.key];
    if (step) {
      event.preventDefault();
      pan(step[0], step[1]);
    }
  });

  // -- controls and keys ------------------------------------------------------------------
  if (heatToggle) {
    heatToggle.addEventListener("change", function () {
      view.heatOn = heatToggle.checked;
      draw();
    });
  }
  if (heatOpacity) {
    heatOpacity.addEventListener("input", function () {
      view.heatAlpha = Number(heatOpacity.value) / 100;
      draw();
    });
  }
  if (preset) {
    preset.addEventListener("change", function () {
      choose(preset.value);
    });
  }
  function toggleInvert() {
    view.userInvert = !view.userInvert;
    if (invertButton) {
      invertButton.setAttribute("aria-pressed", String(view.userInvert));
    }
    draw();
  }
  if (invertButton) {
    invertButton.addEventListener("click", toggleInvert);
  }
  const buttons = {
    "zoom-in": function () { zoom(1.25); },
    "zoom-out": function () { zoom(0.8); },
    fit: function () { fit(); },
  };
  Object.keys(buttons).forEach(function (id) {
    const button = document.getElementById(id);
    if (button) {
      button.addEventListener("click", buttons[id]);
    }
  });
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    const target = event.target;
    if (target.closest && target.closest("textarea, select, [contenteditable], input:not([type=checkbox]):not([type=radio]):not([type=range]):not([type=button])")) {
      return;
    }
    if (event.key === "h" && heatToggle) {
      heatToggle.checked = !heatToggle.checked;
      view.heatOn = heatToggle.checked;
      draw();
    } else if (event.key === "i") {
      toggleInvert();
    } else if (event.key === "0") {
      fit();
    } else if (event.key === "+" || event.key === "=") {
      zoom(1.25);
    } else if (event.key === "-") {
      zoom(0.8);
    } else if (/^[1-9]$/.test(event.key)) {
      const index = Number(event.key);
      choose(index === 1 ? "as-sent" : String(index - 2));
    } else {
      return;
    }
    event.preventDefault();
  });
  new ResizeObserver(function () {
    if (view.fitted) {
      fit(false);
    }
    draw();
  }).observe(stage);

  // -- start: the display image first, a sharper one for a large screen, then the heatmap ----
  function start() {
    view.filmW = img.naturalWidth;
    view.filmH = img.naturalHeight;
    view.base = img;
    img.hidden = true;
    // a narrow (stacked) layout gives the film the height its shape asks for
    if (window.matchMedia("(max-width: 700px)").matches) {
      stage.style.aspectRatio = view.filmW + " / " + view.filmH;
    }
    stage.appendChild(canvas);
    figure.classList.add("live-viewer");
    fit(false);
    draw();
    const dpr = window.devicePixelRatio || 1;
    const wanted = Math.ceil(Math.max(stage.clientWidth, stage.clientHeight) * dpr);
    if (wanted > Math.max(img.naturalWidth, img.naturalHeight) * 1.1) {
      const sharper = new Image();
      sharper.onload = function () {
        if (film.state !== "ready") {
          view.base = sharper;
          draw();
        }
      };
      sharper.src = figure.dataset.display + "?max_side=" + wanted;
    }
    const heatUrl = figure.dataset.heatmap;
    if (heatUrl) {
      const heat = new Image();
      heat.onload = function () {
        view.heat = heat;
        figure.dataset.heatmapLoaded = "true";
        draw();
      };
      heat.src = heatUrl;
    }
  }
  if (img.complete && img.naturalWidth) {
    start();
  } else {
    img.addEventListener("load", start, { once: true });
  }
  // for tests and tools: the viewer's state, read-only
  window.cxrViewer = {
    state: function () {
      return {
        film: film.state,
        window: film.window ? { low: film.window.low, high: film.window.high } : null,
        heatOn: view.heatOn,
        heatLoaded: Boolean(view.heat),
        heatAlpha: view.heatAlpha,
        scale: view.scale,
        inverted: view.userInvert,
      };
    },
    pixel: function (x, y) {
      const data = ctx.getImageData(Math.round(x), Math.round(y), 1, 1).data;
      return [data[0], data[1], data[2]];
    },
  };
})();
