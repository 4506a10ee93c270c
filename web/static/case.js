// The case page's reading flow: one key each for next / previous case, agree, disagree,
// acknowledge and back to the worklist (listed on the page). Keys are ignored while the
// reader types a note, and with Ctrl/Alt/Meta (the browser's own shortcuts).
(function () {
  "use strict";

  // where a key is text being typed, not a command
  const TYPING =
    "textarea, select, [contenteditable], input:not([type=checkbox]):not([type=radio]):not([type=range]):not([type=button])";

  const form = document.getElementById("review");
  const status = document.getElementById("review-status");
  let submitting = false;

  function go(id) {
    const link = document.getElementById(id);
    if (link) {
      window.location.href = link.href;
    }
  }
  function decide(key) {
    if (!form || submitting) {
      return;
    }
    const button = form.querySelector('button[data-key="' + key + '"]');
    if (!button) {
      return;
    }
    submitting = true;
    if (status) {
      status.textContent = "Saving: " + button.value + "…";
    }
    if (form.requestSubmit) {
      form.requestSubmit(button);
    } else {
      button.click();
    }
  }
  if (form) {
    form.addEventListener("submit", function (event) {
      if (status && event.submitter) {
        status.textContent = "Saving: " + event.submitter.value + "…";
      }
    });
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) {
      return;
    }
    const target = event.target;
    if (target.closest && target.closest(TYPING)) {
      return;
    }
    const actions = {
      n: function () { go("next-case"); },
      p: function () { go("previous-case"); },
      u: function () { go("to-worklist"); },
      a: function () { decide("a"); },
      d: function () { decide("d"); },
      s: function () { decide("s"); },
    };
    const action = actions[event.key];
    if (action) {
      event.preventDefault();
      action();
    }
  });

  // waiting time, counted here
  const waiting = document.querySelector(".waiting[data-received]");
  function tick() {
    if (!waiting) {
      return;
    }
    const seconds = Math.max(0, Math.floor((Date.now() - Date.parse(waiting.dataset.received)) / 1000));
    let text;
    if (seconds < 60) {
      text = seconds + " s";
    } else if (seconds < 3600) {
      text = Math.floor(seconds / 60) + " min";
    } else if (seconds < 86400) {
      text = Math.floor(seconds / 3600) + " h " + String(Math.floor(seconds / 60) % 60).padStart(2, "0") + " min";
    } else {
      text = Math.floor(seconds / 86400) + " d " + (Math.floor(seconds / 3600) % 24) + " h";
    }
    waiting.textContent = text;
  }
  window.setInterval(tick, 30000);
})();
