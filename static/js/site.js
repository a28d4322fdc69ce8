// On every signed-in page. Signing out also unlinks this browser: its device is
// revoked and its keys are erased here, so a shared computer keeps nothing that reads
// the user's messages (signing in again restores from the recovery key or a link).
// Every sign-out form does it: the header's and the /logout confirmation page's.
//
// Every signed-in page also rings: the call manager (calls.js) opens this browser's
// live socket when it has keys (a page that goes live itself shares that socket).

import { forgetBrowser, pageUser } from "./parley.js";
import { bootCalls } from "./calls.js";

bootCalls();

for (const form of document.querySelectorAll("form.logout-form")) {
  form.addEventListener("submit", async (event) => {
    if (form.dataset.forgotten) return;
    event.preventDefault();
    if (form.dataset.forgetting) return; // a second click while the first one works
    form.dataset.forgetting = "1";
    const me = pageUser();
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
