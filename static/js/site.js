// On every signed-in page. Signing out also unlinks this browser: its device is
// revoked and its keys are erased here, so a shared computer keeps nothing that reads
// the user's messages (signing in again restores from the recovery key or a link).
// Every sign-out form does it: the header's and the /logout confirmation page's.
// It also stops pushes to this browser, which would tell the next person who wrote.
//
// Every signed-in page also rings: the call manager (calls.js) opens this browser's
// live socket when it has keys (a page that goes live itself shares that socket);
// the notification badge (notifications.js) is kept live on the same socket.

import { forgetBrowser, pageUser } from "./parley.js";
import { bootCalls } from "./calls.js";
import { bootNotifications, turnPushOff } from "./notifications.js";
import { stopLiveSockets } from "./socket.js";

// A sign-out waits this long at most for the push service.
const PUSH_OFF_WAIT_MS = 3000;

bootCalls();
bootNotifications();

for (const form of document.querySelectorAll("form.logout-form")) {
  form.addEventListener("submit", async (event) => {
    if (form.dataset.forgotten) return;
    event.preventDefault();
    if (form.dataset.forgetting) return; // a second click while the first one works
    form.dataset.forgetting = "1";
    // First, so that nothing of this page (a reconnect, a hello's requests) acts for
    // the device that signing out revokes.
    stopLiveSockets();
    const me = pageUser();
    try {
      await Promise.race([turnPushOff(), new Promise((resolve) => setTimeout(resolve, PUSH_OFF_WAIT_MS))]);
    } catch {
      // No push here, or the push service is unreachable: the sign-out goes on.
    }
    try {
      // Revokes the device when there is one; erases the record (even a half-finished
      // setup's) in any case. Signing out must work even offline.
      if (me) await forgetBrowser(me.userId);
    } catch {
      // IndexedDB unavailable: nothing of ours can be kept there either.
    }
    form.dataset.forgotten = "1";
    form.submit();
  });
}
