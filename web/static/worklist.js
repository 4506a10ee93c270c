// The worklist, live: new cases appear without a reload, a new URGENT case is announced
// (and, if the reader turned it on, sounded), waiting times count up, and the list is read
// from the keyboard. Same-origin, no inline script (the page's CSP); the order is always the
// server's (db/reading.py): this script only swaps in what the server rendered.
(function () {
  "use strict";

  // where a key is text being typed, not a command
  const TYPING =
    "textarea, select, [contenteditable], input:not([type=checkbox]):not([type=radio]):not([type=range]):not([type=button])";

  const controls = document.getElementById("live-controls");
  const region = document.getElementById("live-region");
  if (!controls || !region) {
    return;
  }
  const statusLine = document.getElementById("live-status");
  const alertBox = document.getElementById("urgent-alert");
  const soundToggle = document.getElementById("sound-toggle");
  const baseTitle = document.title;
  const SOUND_KEY = "cxr-triage.sound";

  let version = controls.dataset.version || null;
  // when the URGENT case scored last was scored (ISO 8601 UTC, same format throughout, so
  // strings compare as times): a later one is a new URGENT case, whatever its row id
  let newestUrgentAt = controls.dataset.newestUrgentAt || "";
  let refreshing = false;
  let again = false;

  // -- sound: off by default, the reader's choice kept in this browser -------------------
  let audio = null;
  function soundOn() {
    return soundToggle && soundToggle.checked;
  }
  function unlockAudio() {
    if (!soundOn()) {
      return;
    }
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) {
      return;
    }
    if (!audio) {
      audio = new Context();
    }
    if (audio.state === "suspended") {
      audio.resume();
    }
  }
  let beeps = 0;
  function beep() {
    if (!soundOn()) {
      return;
    }
    unlockAudio();
    if (!audio) {
      return;
    }
    beeps += 1;
    // Two short tones (880 Hz, then 660 Hz), made here: no sound file to fetch.
    const start = audio.currentTime + 0.02;
    [880, 660].forEach(function (frequency, index) {
      const tone = audio.createOscillator();
      const gain = audio.createGain();
      const at = start + index * 0.22;
      tone.frequency.value = frequency;
      gain.gain.setValueAtTime(0.0001, at);
      gain.gain.exponentialRampToValueAtTime(0.25, at + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, at + 0.18);
      tone.connect(gain).connect(audio.destination);
      tone.start(at);
      tone.stop(at + 0.2);
    });
  }
  if (soundToggle) {
    try {
      soundToggle.checked = window.localStorage.getItem(SOUND_KEY) === "on";
    } catch (error) {
      soundToggle.checked = false;
    }
    soundToggle.addEventListener("change", function () {
      try {
        window.localStorage.setItem(SOUND_KEY, soundToggle.checked ? "on" : "off");
      } catch (error) {
        // private browsing: the choice lasts for this page only
      }
      if (soundToggle.checked) {
        beep(); // the click is the gesture browsers require before a page may play sound
      }
    });
    // A browser plays sound only after the reader has touched the page once.
    ["pointerdown", "keydown"].forEach(function (name) {
      document.addEventListener(name, unlockAudio, { once: true, capture: true });
    });
  }

  // -- the alert -----------------------------------------------------------------------
  function announceUrgent(rowId) {
    if (!alertBox) {
      return;
    }
    const what = alertBox.querySelector(".what");
    const open = alertBox.querySelector("a.open");
    what.textContent = "(case " + rowId + ", at " + new Date().toLocaleTimeString() + ")";
    open.href = "/worklist/" + rowId;
    alertBox.hidden = false;
    document.body.classList.add("has-urgent-alert");
    beep();
  }
  if (alertBox) {
    alertBox.querySelector(".dismiss").addEventListener("click", function () {
      alertBox.hidden = true;
      document.body.classList.remove("has-urgent-alert");
    });
  }

  // -- live updates: server-sent events, the rendered list swapped in ---------------------
  function setStatus(text) {
    if (statusLine) {
      statusLine.textContent = text;
    }
  }
  function rowSignature(row) {
    // a row whose only change is its waiting time (counted here) is kept as it is
    const waiting = row.querySelector("td.waiting");
    const saved = waiting ? waiting.textContent : null;
    if (waiting) {
      waiting.textContent = "";
    }
    const signature = row.outerHTML;
    if (waiting) {
      waiting.textContent = saved;
    }
    return signature;
  }
  function merge(fresh) {
    const kept = new Map();
    region.querySelectorAll("tr[data-id]").forEach(function (row) {
      kept.set(rowSignature(row), row);
    });
    fresh.querySelectorAll("tr[data-id]").forEach(function (row) {
      const same = kept.get(rowSignature(row));
      if (same) {
        row.replaceWith(same); // its thumbnail stays loaded, its selection too
      }
    });
    const focused = document.activeElement;
    const hadFocus = focused && region.contains(focused);
    const selected = region.querySelector("tr.selected");
    const selectedId = selected ? selected.dataset.id : null;
    region.replaceChildren.apply(region, Array.from(fresh.childNodes));
    if (selectedId) {
      const again = region.querySelector('tr[data-id="' + selectedId + '"]');
      if (again) {
        again.classList.add("selected");
        if (hadFocus) {
          const link = again.querySelector("a.open");
          if (link) {
            link.focus({ preventScroll: true });
          }
        }
      }
    }
    tick();
  }
  function refresh() {
    if (refreshing) {
      again = true;
      return;
    }
    refreshing = true;
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.redirected && new URL(response.url).pathname === "/login") {
          window.location.reload();
          return null;
        }
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        if (html === null) {
          return;
        }
        const doc = new DOMParser().parseFromString(html, "text/html");
        const fresh = doc.getElementById("live-region");
        if (fresh) {
          merge(fresh);
          setStatus("Live: list updated at " + new Date().toLocaleTimeString());
        }
      })
      .catch(function () {
        setStatus("Live: the list could not be refreshed; trying again.");
        again = true;
      })
      .finally(function () {
        refreshing = false;
        if (again) {
          again = false;
          window.setTimeout(refresh, 500);
        }
      });
  }
  function onSnapshot(snapshot) {
    const counts = snapshot.counts || {};
    const urgent = counts.urgent || 0;
    document.title = (urgent ? "(" + urgent + " urgent) " : "") + baseTitle;
    const at = snapshot.newest_urgent_at || "";
    if (snapshot.newest_urgent && at > newestUrgentAt) {
      announceUrgent(snapshot.newest_urgent);
    }
    if (at > newestUrgentAt) {
      newestUrgentAt = at;
    }
    if (snapshot.version !== version) {
      version = snapshot.version;
      refresh();
    } else {
      setStatus("Live: up to date (" + new Date().toLocaleTimeString() + ")");
    }
  }
  function connect() {
    const source = new EventSource(controls.dataset.events);
    source.addEventListener("snapshot", function (event) {
      onSnapshot(JSON.parse(event.data));
    });
    source.addEventListener("logout", function () {
      source.close();
      window.location.reload(); // the server sends the login form
    });
    source.addEventListener("error", function () {
      setStatus("Live: connection lost, reconnecting…");
      if (source.readyState !== EventSource.CLOSED) {
        return; // the browser reconnects by itself
      }
      // closed for good (a redirect to the login form, a proxy's error page): ask why
      fetch("/worklist/live", { credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (response.redirected && new URL(response.url).pathname === "/login") {
            window.location.reload();
          } else {
            window.setTimeout(connect, 3000);
          }
        })
        .catch(function () {
          window.setTimeout(connect, 3000);
        });
    });
  }
  if (window.EventSource) {
    connect();
  } else {
    setStatus("Live updates need a newer browser: reload to see new cases.");
  }

  // -- waiting times, counted here between refreshes -------------------------------------
  function waitingText(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 60) {
      return seconds + " s";
    }
    let minutes = Math.floor(seconds / 60);
    if (minutes < 60) {
      return minutes + " min";
    }
    let hours = Math.floor(minutes / 60);
    minutes -= hours * 60;
    if (hours < 24) {
      return hours + " h " + String(minutes).padStart(2, "0") + " min";
    }
    const days = Math.floor(hours / 24);
    hours -= days * 24;
    return days + " d " + hours + " h";
  }
  function tick() {
    const now = Date.now();
    document.querySelectorAll("[data-received]").forEach(function (cell) {
      const received = Date.parse(cell.dataset.received);
      if (!Number.isNaN(received)) {
        cell.textContent = waitingText((now - received) / 1000);
      }
    });
  }
  window.setInterval(tick, 30000);

  // -- on a phone the filters fold away unless some are set: the list comes first ----------
  const filterBox = document.getElementById("filter-box");
  if (filterBox && !filterBox.dataset.active && window.matchMedia("(max-width: 700px)").matches) {
    filterBox.open = false;
  }

  // -- keys --------------------------------------------------------------------------------
  function rows() {
    return Array.from(region.querySelectorAll("tr[data-id]")).filter(function (row) {
      return row.querySelector("a.open");
    });
  }
  function select(row) {
    region.querySelectorAll("tr.selected").forEach(function (other) {
      other.classList.remove("selected");
    });
    row.classList.add("selected");
    const link = row.querySelector("a.open");
    link.focus();
    row.scrollIntoView({ block: "nearest" });
  }
  function move(step) {
    const all = rows();
    if (!all.length) {
      return;
    }
    const current = all.findIndex(function (row) {
      return row.classList.contains("selected");
    });
    const next = current < 0 ? (step > 0 ? 0 : all.length - 1) : current + step;
    select(all[Math.max(0, Math.min(all.length - 1, next))]);
  }
  function follow(selector) {
    const link = region.querySelector(selector);
    if (link) {
      window.location.href = link.href;
    }
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    const target = event.target;
    if (target.closest && target.closest(TYPING)) {
      return;
    }
    const actions = {
      j: function () { move(1); },
      k: function () { move(-1); },
      "]": function () { follow('a[rel="next"]'); },
      "[": function () { follow('a[rel="prev"]'); },
      g: function () {
        const go = document.getElementById("go-to");
        if (go) {
          go.focus();
        }
      },
    };
    const action = actions[event.key];
    if (action) {
      event.preventDefault();
      action();
    }
  });
  // a jump to "#pos-N" selects that row
  if (window.location.hash.indexOf("#pos-") === 0) {
    const cell = document.getElementById(window.location.hash.slice(1));
    if (cell) {
      select(cell.closest("tr"));
    }
  }
  // for tests and tools: what the page did, read-only
  window.cxrWorklist = {
    state: function () {
      return {
        version: version,
        newestUrgentAt: newestUrgentAt,
        beeps: beeps,
        audio: audio ? audio.state : null,
      };
    },
  };
})();
