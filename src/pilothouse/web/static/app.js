// Pilothouse dashboard: the only script. Parts marked data-refresh are fetched again every
// data-every milliseconds and swapped in place (the approvals queue), unless the person is
// typing in them.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const part of document.querySelectorAll("[data-refresh]")) {
    const every = Number(part.dataset.every || 2000);
    const refresh = async () => {
      if (part.contains(document.activeElement) && document.activeElement.tagName === "INPUT") {
        return; // someone is writing a comment: do not replace it under them
      }
      try {
        const reply = await fetch(part.dataset.refresh, {credentials: "same-origin"});
        if (reply.status === 401) { window.location.assign("/login"); return; }
        if (reply.ok) { part.innerHTML = await reply.text(); }
      } catch (error) { /* offline for a moment: try again next time */ }
    };
    setInterval(refresh, every);
  }
});
