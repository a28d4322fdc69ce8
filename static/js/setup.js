// First run of a browser: create the account's keys (and show the recovery key once),
// or restore them from the recovery key or passphrase, or link from another device.

import * as c from "./crypto.js";
import { api } from "./api.js";
import { loadAccount } from "./keystore.js";
import { accountHasAik, Parley, pageUser } from "./parley.js";
import { startLink } from "./link.js";
import { byId, errorText, nextPath } from "./ui.js";

const me = pageUser();
const status = byId("setup-status");
let resume = null;

function show(id) {
  for (const section of ["setup-create", "setup-recovery", "setup-existing"]) byId(section).hidden = section !== id;
}

async function start() {
  await c.ready();
  const record = await loadAccount(me.userId);
  if (record?.device) {
    location.replace(nextPath());
    return;
  }
  const mine = await api("GET", `/keys/${me.userId}`);
  if (record?.aikSeed && accountHasAik(mine, c.identityKeyFromSeed(c.b64uDecode(record.aikSeed)).publicKey)) {
    // A first setup that stopped half-way in this browser: finish it with the same keys.
    resume = record;
    status.textContent = "Let's finish setting up your keys.";
    show("setup-create");
  } else if (!mine.aik_pub) {
    status.textContent = "This is your first device. Let's create your keys.";
    show("setup-create");
  } else {
    status.textContent = "";
    show("setup-existing");
  }
}

byId("create-keys").addEventListener("click", async (event) => {
  const button = event.currentTarget;
  button.disabled = true;
  status.textContent = "Creating your keys…";
  try {
    const code = await Parley.createKeys(me, { resume });
    byId("recovery-code").textContent = code;
    status.textContent = "Your keys are ready.";
    show("setup-recovery");
    byId("recovery-title").focus();
  } catch (error) {
    status.textContent = errorText(error);
    button.disabled = false;
  }
});

const done = byId("recovery-done");
done.href = nextPath();
byId("wrote-it-down").addEventListener("change", (event) => {
  done.setAttribute("aria-disabled", event.currentTarget.checked ? "false" : "true");
});
done.addEventListener("click", (event) => {
  if (!byId("wrote-it-down").checked) {
    event.preventDefault();
    status.textContent = "Please confirm you wrote the recovery key down: it is shown only once.";
  }
});

byId("restore-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const secret = byId("restore-secret").value;
  const method = new FormData(event.currentTarget).get("method");
  const errorLine = byId("restore-error");
  errorLine.textContent = "";
  if (!secret.trim()) {
    errorLine.textContent = method === "code" ? "Enter your recovery key." : "Enter your passphrase.";
    byId("restore-secret").focus();
    return;
  }
  byId("restore-submit").disabled = true;
  status.textContent = method === "code" ? "Restoring…" : "Checking your passphrase (this takes a few seconds)…";
  try {
    await Parley.restore(me, method === "code" ? { code: secret } : { passphrase: secret });
    status.textContent = "Restored. Loading your messages…";
    location.replace(nextPath());
  } catch (error) {
    status.textContent = "";
    errorLine.textContent = error instanceof c.RecoveryCodeError || error instanceof c.BackupRestoreError || error instanceof c.DecryptionError
      ? "That does not open your backup. Check it and try again."
      : errorText(error);
    byId("restore-submit").disabled = false;
    byId("restore-secret").focus();
  }
});

byId("link-start").addEventListener("click", async (event) => {
  event.currentTarget.disabled = true;
  byId("link-panel").hidden = false;
  byId("link-code-line").hidden = true; // a code of an earlier attempt means nothing now
  const linkStatus = byId("link-status");
  try {
    await startLink(me, {
      onCode: (code) => {
        byId("link-code").textContent = code;
        byId("link-code-line").hidden = false;
        linkStatus.textContent = "Check that your other device shows the same code, and confirm there.";
      },
      onStatus: (text) => (linkStatus.textContent = text),
      cancelButton: byId("link-cancel"),
    });
    linkStatus.textContent = "Linked. Loading your messages…";
    location.replace(nextPath());
  } catch (error) {
    linkStatus.textContent = errorText(error);
    byId("link-start").disabled = false;
  }
});

start().catch((error) => (status.textContent = errorText(error)));
