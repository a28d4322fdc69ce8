// Voice and video calls (docs/calls.md): the call manager of this browser's device and
// the in-call view, on every signed-in page whose browser has keys.
//
// Signaling goes over the page's one live socket; every SDP and ICE candidate is boxed
// from this device's box key to the one peer device's, whose key comes from the peer's
// verified key directory. A received box is refused unless its type, call id, sender
// and recipient devices (and, for an offer, the media) are what the clear frame says.
// Media is WebRTC between the two devices; the server never sees any of it.

import { api } from "./api.js";
import * as c from "./crypto.js";
import { IdentityKeyChanged, Parley, pageUser } from "./parley.js";
import { LiveSocket, SocketError } from "./socket.js";
import { el, errorText, UserError } from "./ui.js";

// How long the call view stays up with the reason a call ended.
const LINGER_MS = 4000;
const MEDIA_NAMES = { audio: "voice", video: "video" };
// How long a call rings when the server does not say (`ring_seconds`).
const DEFAULT_RING_SECONDS = 60;

let manager = null;
let booting = null;

/** "1:23", "12:05", "1:02:03". */
export function formatDuration(seconds) {
  const total = Math.max(0, Math.floor(Number(seconds) || 0));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

/** "Voice call", "video call"… */
export function mediaName(media, { capital = false } = {}) {
  const name = `${MEDIA_NAMES[media] || "voice"} call`;
  return capital ? name[0].toUpperCase() + name.slice(1) : name;
}

function sameId(a, b) {
  try {
    return c.canonicalId(a) === c.canonicalId(b);
  } catch {
    return false;
  }
}

function idOf(value) {
  try {
    return c.canonicalId(value);
  } catch {
    return null;
  }
}

function callErrorText(error) {
  if (error instanceof SocketError) return error.message;
  if (error instanceof IdentityKeyChanged) {
    return `${error.message} The call was not placed.`;
  }
  if (error instanceof DOMException && ["NotAllowedError", "SecurityError"].includes(error.name)) {
    return "Parley may not use your microphone or camera. Allow it in the browser, then call again.";
  }
  if (error instanceof DOMException && ["NotFoundError", "NotReadableError", "OverconstrainedError"].includes(error.name)) {
    return "No microphone or camera could be used.";
  }
  return errorText(error);
}

/** What the call view says when a call ends, from `call.ended`'s reason. */
function endText(call, reason, duration) {
  const outgoing = call.direction === "outgoing";
  switch (reason) {
    case "hangup":
    case "connection_lost":
    case "failed": {
      const what = reason === "hangup" ? "Call ended" : reason === "failed" ? "Call failed" : "Connection lost";
      return typeof duration === "number" ? `${what} · ${formatDuration(duration)}` : what;
    }
    case "declined":
      return "Declined";
    case "timeout":
      return outgoing ? "No answer" : "Missed call";
    case "busy":
      return outgoing ? `@${call.peer.handle} is busy` : "Busy";
    case "cancelled":
      return outgoing ? "Call cancelled" : "Missed call";
    case "unavailable":
      return `@${call.peer.handle} cannot be called at the moment`;
    default:
      return "Call ended";
  }
}

function getMedia(media) {
  if (!navigator.mediaDevices?.getUserMedia) {
    return Promise.reject(new UserError("This browser cannot make calls here (it needs a secure connection)."));
  }
  return navigator.mediaDevices.getUserMedia({ audio: true, video: media === "video" });
}

/** One call of this device, placed or answered. */
class Call {
  constructor({ id, direction, media, peer }) {
    this.id = id;
    this.direction = direction; // "outgoing" | "incoming"
    this.media = media;
    this.peer = peer; // {id, handle, name}
    // null, "changed" (the peer's safety number changed) or "verified" (and they were verified).
    this.keyWarning = null;
    this.peerDevice = null;
    this.peerBox = null;
    // preparing → inviting → ringing → connecting → active → ended (outgoing);
    // connecting → active → ended (incoming).
    this.state = "preparing";
    this.over = false;
    this.pc = null;
    this.stream = null;
    this.remoteStream = null;
    this.remoteSet = false; // remote description set: remote candidates can be added
    this.canTrickle = false; // the call is active on the server: candidates are relayed
    this.localCandidates = [];
    this.remoteCandidates = [];
    this.sentEnd = false;
    this.connectedAt = null;
    this.queue = Promise.resolve(); // signaling of this call, handled in order
  }

  /** Run `step` after every earlier signaling step of this call. */
  then(step) {
    this.queue = this.queue.then(step).catch(() => {});
    return this.queue;
  }

  seconds() {
    return this.connectedAt ? Math.floor((Date.now() - this.connectedAt) / 1000) : null;
  }
}

/** Show (or hide, for no `kind`) that `handle`'s safety number changed, in `node`. */
function showKeyWarning(node, handle, kind) {
  node.hidden = !kind;
  if (!kind) return node.replaceChildren();
  node.replaceChildren(
    kind === "verified"
      ? `@${handle}'s safety number changed since you verified it: accept the new key before you call or answer. `
      : `@${handle}'s safety number changed. `,
    el("a", { href: "/settings/safety" }, "Compare safety numbers"),
  );
}

/** The incoming-call dialog and the in-call panel, built once, on demand. */
class CallView {
  constructor(calls) {
    this.calls = calls;
    this.current = null; // the call the panel shows
    this.ringing = null; // the incoming call the dialog shows
    this.closeTimer = null;
    this.clock = null;
    this.returnFocus = null;
  }

  build() {
    if (this.panel) return;
    this.title = el("h2", { class: "call-title", id: "call-title" });
    this.warning = el("p", { class: "banner call-warning", role: "alert", hidden: true });
    this.remote = el("video", { class: "call-video remote", autoplay: true, playsinline: true });
    this.local = el("video", { class: "call-video local", autoplay: true, playsinline: true, "aria-label": "Your camera" });
    this.local.muted = true; // never play our own microphone back
    this.videos = el("div", { class: "call-videos" }, this.remote, this.local);
    this.status = el("p", { class: "call-status", role: "status" });
    this.timer = el("p", { class: "call-timer", role: "timer", "aria-label": "Call duration", hidden: true });
    this.muteButton = el("button", { type: "button", class: "button", onclick: () => this.calls.toggleMute() }, "Mute microphone");
    this.cameraButton = el("button", { type: "button", class: "button", onclick: () => this.calls.toggleCamera() }, "Camera off");
    this.hangupButton = el("button", { type: "button", class: "button button-danger", onclick: () => this.calls.hangUp() }, "Hang up");
    this.closeButton = el("button", { type: "button", class: "button", hidden: true, onclick: () => this.close() }, "Close");
    this.panel = el("dialog", { class: "call-panel", "aria-labelledby": "call-title" },
      this.title,
      this.warning,
      this.videos,
      el("div", { class: "call-line" }, this.status, this.timer),
      el("div", { class: "call-controls" }, this.muteButton, this.cameraButton, this.hangupButton, this.closeButton),
    );

    this.ringText = el("p", { id: "call-incoming-text" });
    this.ringWarning = el("p", { class: "banner call-warning", id: "call-incoming-warning", hidden: true });
    this.acceptButton = el("button", { type: "button", class: "button button-primary", onclick: () => this.calls.accept(this.ringing) }, "Accept");
    this.declineButton = el("button", { type: "button", class: "button button-danger", onclick: () => this.calls.decline(this.ringing) }, "Decline");
    this.dialog = el("dialog", { class: "call-incoming", "aria-labelledby": "call-incoming-title", "aria-describedby": "call-incoming-text call-incoming-warning" },
      el("h2", { id: "call-incoming-title" }, "Incoming call"),
      this.ringText,
      this.ringWarning,
      el("div", { class: "actions" }, this.acceptButton, this.declineButton),
    );
    // Escape stops the ringing in this tab only; the call still rings elsewhere.
    this.dialog.addEventListener("cancel", () => this.calls.ignore(this.ringing));
    document.body.append(this.panel, this.dialog);
  }

  // --- Incoming ------------------------------------------------------------------------------

  showRinging(incoming) {
    this.build();
    if (this.ringing === incoming && this.dialog.open) return;
    this.ringing = incoming;
    const who = incoming.caller.name && incoming.caller.name !== incoming.caller.handle
      ? `${incoming.caller.name} (@${incoming.caller.handle})`
      : `@${incoming.caller.handle}`;
    this.ringText.textContent = `${who} is calling (${mediaName(incoming.media)})`;
    showKeyWarning(this.ringWarning, incoming.caller.handle, incoming.keyWarning);
    // A verified contact whose key changed is not answered until the new key is accepted.
    this.acceptButton.hidden = incoming.keyWarning === "verified";
    if (!this.dialog.open) {
      if (!this.returnFocus) this.returnFocus = document.activeElement;
      this.dialog.showModal();
    }
    (this.acceptButton.hidden ? this.declineButton : this.acceptButton).focus();
  }

  hideRinging() {
    this.ringing = null;
    if (this.dialog?.open) this.dialog.close();
  }

  // --- The call ------------------------------------------------------------------------------

  open(call) {
    this.build();
    clearTimeout(this.closeTimer);
    clearInterval(this.clock);
    this.current = call;
    if (!this.returnFocus) this.returnFocus = document.activeElement;
    this.panel.classList.toggle("call-audio", call.media !== "video");
    this.panel.classList.remove("call-ended", "call-error");
    this.remote.srcObject = null;
    this.local.srcObject = null;
    this.timer.hidden = true;
    this.timer.textContent = "";
    this.muteButton.textContent = "Mute microphone";
    this.muteButton.hidden = false;
    this.cameraButton.textContent = "Camera off";
    this.cameraButton.hidden = call.media !== "video";
    this.hangupButton.hidden = false;
    this.closeButton.hidden = true;
    this.setTitle(call);
    this.showWarning(call);
    if (!this.panel.open) this.panel.show();
    this.hangupButton.focus();
  }

  setTitle(call) {
    if (this.current !== call) return;
    const who = call.peer.handle ? `@${call.peer.handle}` : "";
    this.title.textContent = `${mediaName(call.media, { capital: true })} with ${who}`;
    this.remote.setAttribute("aria-label", `${who}'s video`);
  }

  showWarning(call) {
    if (this.current === call) showKeyWarning(this.warning, call.peer.handle, call.keyWarning);
  }

  say(call, text) {
    if (this.current === call) this.status.textContent = text;
  }

  showLocal(call) {
    if (this.current !== call) return;
    this.local.srcObject = call.stream;
  }

  showRemote(call, event) {
    let stream = event.streams[0];
    if (!stream) {
      call.remoteStream ||= new MediaStream();
      call.remoteStream.addTrack(event.track);
      stream = call.remoteStream;
    }
    if (this.current !== call || this.remote.srcObject === stream) return;
    this.remote.srcObject = stream;
    this.remote.play().catch(() => {}); // autoplay refused: the element still shows controls-free video once allowed
  }

  connected(call) {
    if (this.current !== call) return;
    this.say(call, "Connected");
    this.timer.hidden = false;
    const tick = () => {
      this.timer.textContent = formatDuration(call.seconds());
    };
    tick();
    clearInterval(this.clock);
    this.clock = setInterval(tick, 1000);
  }

  ended(call, text, { error = false } = {}) {
    if (this.current !== call) return;
    clearInterval(this.clock);
    this.status.textContent = text;
    this.timer.hidden = true;
    this.panel.classList.add("call-ended");
    this.panel.classList.toggle("call-error", error);
    this.muteButton.hidden = true;
    this.cameraButton.hidden = true;
    this.hangupButton.hidden = true;
    this.closeButton.hidden = false;
    this.closeButton.focus();
    this.remote.srcObject = null;
    this.local.srcObject = null;
    // An error stays until it is read and closed; a normal end goes by itself.
    if (!error) this.closeTimer = setTimeout(() => this.current === call && this.close(), LINGER_MS);
  }

  close() {
    clearTimeout(this.closeTimer);
    clearInterval(this.clock);
    if (this.current && !this.current.over) return; // a call in progress closes by hanging up
    this.current = null;
    if (this.panel?.open) this.panel.close();
    this.restoreFocus();
  }

  restoreFocus() {
    const back = this.returnFocus;
    this.returnFocus = null;
    if (back?.isConnected && !this.dialog?.open && !(this.panel?.open)) back.focus?.();
  }
}

/** The calls of this device: one at a time, placed or answered, plus the calls ringing. */
class CallManager {
  constructor(client, socket) {
    this.client = client;
    this.socket = socket;
    this.call = null;
    this.incoming = new Map(); // call id -> ringing call, opened and checked
    this.endedIds = new Set();
    // Calls that stopped ringing here (answered elsewhere, ended, dropped, ignored): one
    // whose offer is still being opened is not shown when it is ready.
    this.goneIds = new Set();
    this.opening = new Set(); // call ids whose offer is being opened
    this.view = new CallView(this);
    socket.addHandlers({
      onConnected: () => this.connected(),
      onEvent: (frame) => this.onEvent(frame),
    });
    window.addEventListener("pagehide", () => this.leaving());
  }

  get myDevice() {
    return c.canonicalId(this.client.deviceId);
  }

  // --- Socket --------------------------------------------------------------------------------

  async connected() {
    const call = this.call;
    // Candidates that could not be sent while the connection was down go now.
    if (call && !call.over && call.canTrickle) this.flushCandidates(call);
    // A tab opened (or a connection back) while a call rings for this device rings too,
    // and a call shown ringing that no longer rings (answered elsewhere or ended while
    // the connection was down) stops.
    const shown = [...this.incoming.keys(), ...this.opening];
    try {
      const ringing = await api("GET", "/calls/ringing", { query: { device: this.client.deviceId } });
      const results = ringing.results || [];
      const listed = new Set(results.map((info) => idOf(info?.call_id)));
      for (const id of shown) if (!listed.has(id)) this.dropIncoming(id);
      for (const info of results) await this.incomingCall(info);
    } catch {
      // The socket events still ring; nothing to show here.
    }
    // A call of ours that ended while the connection was down ends here too.
    if (call && !call.over && call.state !== "preparing") {
      try {
        const stored = await api("GET", `/calls/${call.id}`);
        if (!["ringing", "active"].includes(stored.state)) this.ended({ call_id: call.id, state: stored.state, reason: stored.end_reason, duration: stored.duration });
      } catch {
        // Not stored (the invite never got through) or unreachable: leave it.
      }
    }
  }

  onEvent(frame) {
    switch (frame.type) {
      case "call.incoming":
        this.incomingCall(frame);
        break;
      case "call.accepted": {
        const call = this.call;
        if (call && !call.over && call.direction === "outgoing" && sameId(frame.call_id, call.id)) call.then(() => this.accepted(call, frame));
        break;
      }
      case "call.candidate": {
        const call = this.call;
        if (call && !call.over && sameId(frame.call_id, call.id)) call.then(() => this.remoteCandidate(call, frame));
        break;
      }
      case "call.answered_elsewhere":
        this.dropIncoming(frame.call_id);
        break;
      case "call.ended":
        this.ended(frame);
        break;
      default:
    }
  }

  seal(boxPub, plaintext) {
    return c.boxToDevice(c.utf8(JSON.stringify(plaintext)), boxPub, this.client.boxSecret);
  }

  /** Open a signaling box and check it is the step it claims; null when it is not. */
  openSignal(boxed, boxPub, { type, callId, from }) {
    let plain;
    try {
      plain = JSON.parse(c.utf8Decode(c.openFromDevice(boxed, boxPub, this.client.boxSecret)));
    } catch {
      return null;
    }
    if (!plain || typeof plain !== "object" || plain.v !== 1 || plain.type !== type) return null;
    if (!sameId(plain.call_id, callId) || !sameId(plain.from, from) || !sameId(plain.to, this.myDevice)) return null;
    return plain;
  }

  // --- Placing a call ------------------------------------------------------------------------

  /** Call `handle`, who must be the user `userId` (the button's; the server answers the id). */
  async place(handle, media, userId) {
    if (this.call && !this.call.over) {
      this.view.open(this.call); // already in a call: show it
      return;
    }
    const call = new Call({ id: crypto.randomUUID(), direction: "outgoing", media, peer: { handle } });
    this.call = call;
    this.view.hideRinging();
    this.view.open(call);
    this.view.say(call, "Calling…");
    let reply;
    try {
      const prepared = await this.socket.request({ type: "call.prepare", callee: handle, media });
      if (call.over) return;
      // The person on the button, not whoever the server says the handle is now.
      if (!sameId(prepared.callee?.id, userId)) throw new UserError("The server answered for another person. The call was not placed.");
      call.peer = prepared.callee;
      this.view.setTitle(call);
      // Their keys before the camera: a verified contact whose key changed is not called
      // (IdentityKeyChanged), a changed safety number is shown.
      try {
        await this.client.directory(call.peer.id);
      } catch (error) {
        if (error instanceof IdentityKeyChanged) {
          call.keyWarning = "verified";
          this.view.showWarning(call);
        }
        throw error;
      }
      if (call.over) return;
      call.keyWarning = this.client.pin(call.peer.id)?.changed ? "changed" : null;
      this.view.showWarning(call);
      call.stream = await getMedia(media);
      if (call.over) return this.stopMedia(call);
      this.view.showLocal(call);
      // Relay-only unless the server says plainly that it is not.
      const pc = this.connection(call, prepared.ice_servers, prepared.relay_only !== false);
      for (const track of call.stream.getTracks()) pc.addTrack(track, call.stream);
      await pc.setLocalDescription(await pc.createOffer());
      if (call.over) return;
      const sdp = pc.localDescription.sdp;
      let fresh = false;
      for (;;) {
        const directory = await this.client.directory(call.peer.id, { fresh });
        if (!directory.devices.size) throw new UserError(`@${call.peer.handle} has no device that can take calls.`);
        const offers = {};
        for (const [deviceId, boxPub] of directory.devices) {
          offers[deviceId] = this.seal(boxPub, { v: 1, type: "offer", call_id: call.id, from: this.myDevice, to: deviceId, media, sdp });
        }
        if (call.over) return;
        call.state = "inviting";
        try {
          reply = await this.socket.request({ type: "call.invite", call_id: call.id, callee: call.peer.handle, media, offers });
          break;
        } catch (error) {
          // A device was added or removed since the directory was read: read it again, once.
          if (error.code !== "device_list_changed" || fresh) throw error;
          fresh = true;
        }
      }
    } catch (error) {
      // No answer to the invite: it may ring all the same, so cancel it if it does.
      if (call.state === "inviting" && ["timeout", "offline"].includes(error.code)) this.socket.send({ type: "call.cancel", call_id: call.id });
      if (!call.over) this.finish(call, callErrorText(error), { error: true });
      return;
    }
    if (reply.type === "call.ended") {
      this.ended(reply);
      return;
    }
    if (call.over) {
      // Hung up while the invite was on its way: it rings now, so cancel it.
      this.socket.request({ type: "call.cancel", call_id: call.id }).then((ended) => this.ended(ended), () => {});
      return;
    }
    if (call.state === "inviting") {
      call.state = "ringing";
      this.view.say(call, "Ringing…");
    }
  }

  /** The callee's answer: from one of the callee's verified devices, for this call. */
  async accepted(call, frame) {
    if (call.over || call.peerDevice || !["inviting", "ringing"].includes(call.state)) return;
    const device = idOf(frame.callee_device);
    let boxPub = null;
    try {
      boxPub = device && (await this.client.deviceBoxKey(call.peer.id, device));
    } catch {
      boxPub = null;
    }
    const answer = boxPub && this.openSignal(frame.answer, boxPub, { type: "answer", callId: call.id, from: device });
    if (call.over) return;
    if (!answer || typeof answer.sdp !== "string") {
      this.hangupFrame(call, "failed");
      this.finish(call, "The answer could not be verified. The call was ended.", { error: true });
      return;
    }
    call.peerDevice = device;
    call.peerBox = boxPub;
    call.state = "connecting";
    this.view.say(call, "Connecting…");
    try {
      await call.pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    } catch {
      this.hangupFrame(call, "failed");
      this.finish(call, "Call failed", { error: true });
      return;
    }
    await this.remoteReady(call);
    this.startTrickle(call);
  }

  // --- Answering -----------------------------------------------------------------------------

  /** A `call.incoming` (or an entry of the ringing list): open and check it, then ring. */
  async incomingCall(info) {
    const id = idOf(info?.call_id);
    const known = () => this.endedIds.has(id) || this.goneIds.has(id) || this.incoming.has(id) || this.call?.id === id;
    if (!id || known()) return;
    // What is left of the ring as the server counts it: this browser's clock may be off.
    const ringSeconds = Number.isFinite(info.ring_seconds) ? info.ring_seconds : DEFAULT_RING_SECONDS;
    const deadline = Date.now() + ringSeconds * 1000;
    if (!(ringSeconds > 0) || !["audio", "video"].includes(info.media) || !info.caller?.id) return;
    const callerDevice = idOf(info.caller_device);
    let key = null;
    let refused = false; // a verified contact whose key changed: shown, never answered
    this.opening.add(id);
    try {
      key = callerDevice && (await this.client.deviceKey(info.caller.id, callerDevice));
    } catch (error) {
      refused = error instanceof IdentityKeyChanged;
    } finally {
      this.opening.delete(id);
    }
    let offer = null;
    if (!refused) {
      // An offer that does not open, or is not this call's, from this device, for this
      // media, is ignored: it may be a replay or a relabelling by the server.
      offer = key?.boxPub && this.openSignal(info.offer, key.boxPub, { type: "offer", callId: id, from: callerDevice });
      if (!offer || offer.media !== info.media || typeof offer.sdp !== "string") return;
    }
    // Answered elsewhere, ended or dropped while the offer was being opened.
    if (known() || !(deadline > Date.now())) return;
    const incoming = {
      id,
      caller: { id: info.caller.id, handle: String(info.caller.handle || ""), name: String(info.caller.name || "") },
      callerDevice,
      callerBox: refused ? null : key.boxPub,
      keyWarning: refused ? "verified" : key.changed ? "changed" : null,
      media: info.media,
      sdp: refused ? null : offer.sdp,
      iceServers: info.ice_servers,
      // Relay-only unless the server says plainly that it is not.
      relayOnly: info.relay_only !== false,
      // Stop ringing at the deadline even if the server's word never comes.
      timer: setTimeout(() => this.dropIncoming(id), deadline - Date.now() + 5000),
    };
    this.incoming.set(id, incoming);
    this.ring();
  }

  /** Show the first call ringing, unless this device is in a call. */
  ring() {
    if (this.call && !this.call.over) return;
    const [next] = this.incoming.values();
    if (next) this.view.showRinging(next);
    else this.view.hideRinging();
  }

  dropIncoming(callId) {
    const id = idOf(callId);
    if (!id) return;
    this.goneIds.add(id);
    const incoming = this.incoming.get(id);
    if (!incoming) return;
    clearTimeout(incoming.timer);
    this.incoming.delete(id);
    if (this.view.ringing === incoming) this.view.hideRinging();
    this.ring();
  }

  ignore(incoming) {
    if (!incoming) return;
    clearTimeout(incoming.timer);
    this.goneIds.add(incoming.id);
    this.incoming.delete(incoming.id);
    this.view.hideRinging();
    this.view.restoreFocus();
  }

  async decline(incoming) {
    if (!incoming) return;
    this.ignore(incoming);
    try {
      this.ended(await this.socket.request({ type: "call.decline", call_id: incoming.id }));
    } catch {
      // Ended meanwhile, or the connection is gone: it stops ringing at its deadline.
    }
  }

  async accept(incoming) {
    // A verified contact whose key changed is not answered (the dialog says so).
    if (!incoming || !incoming.sdp || (this.call && !this.call.over)) return;
    clearTimeout(incoming.timer);
    this.incoming.delete(incoming.id);
    this.view.hideRinging();
    const call = new Call({ id: incoming.id, direction: "incoming", media: incoming.media, peer: incoming.caller });
    call.peerDevice = incoming.callerDevice;
    call.peerBox = incoming.callerBox;
    call.keyWarning = incoming.keyWarning;
    call.state = "connecting";
    this.call = call;
    this.view.open(call);
    this.view.say(call, "Connecting…");
    let asked = false; // call.accept sent
    try {
      call.stream = await getMedia(call.media);
      if (call.over) return this.stopMedia(call);
      this.view.showLocal(call);
      const pc = this.connection(call, incoming.iceServers, incoming.relayOnly);
      await pc.setRemoteDescription({ type: "offer", sdp: incoming.sdp });
      await this.remoteReady(call);
      for (const track of call.stream.getTracks()) pc.addTrack(track, call.stream);
      await pc.setLocalDescription(await pc.createAnswer());
      if (call.over) return;
      const answer = this.seal(call.peerBox, {
        v: 1, type: "answer", call_id: call.id, from: this.myDevice, to: call.peerDevice, sdp: pc.localDescription.sdp,
      });
      asked = true;
      await this.socket.request({ type: "call.accept", call_id: call.id, answer });
    } catch (error) {
      if (call.over) return;
      // No reply to the accept (not a refusal): the server may have taken it, so end it
      // there too rather than leave the caller connecting.
      if (asked && ["timeout", "offline"].includes(error?.code)) this.hangupFrame(call, "failed");
      const text = error?.code === "call_answered_elsewhere" ? "Answered on another device." : callErrorText(error);
      this.finish(call, text, { error: error?.code !== "call_answered_elsewhere" });
      return;
    }
    // The call is active on the server now: candidates are relayed from here on.
    if (!call.over) this.startTrickle(call);
  }

  // --- The connection ------------------------------------------------------------------------

  connection(call, iceServers, relayOnly) {
    const pc = new RTCPeerConnection({
      iceServers: Array.isArray(iceServers) ? iceServers : [],
      iceTransportPolicy: relayOnly ? "relay" : "all",
    });
    call.pc = pc;
    pc.onicecandidate = (event) => this.localCandidate(call, event.candidate);
    pc.ontrack = (event) => this.view.showRemote(call, event);
    pc.onconnectionstatechange = () => this.connectionChanged(call);
    return pc;
  }

  connectionChanged(call) {
    if (call.over || this.call !== call) return;
    const state = call.pc.connectionState;
    if (state === "connected") {
      call.state = "active";
      if (!call.connectedAt) call.connectedAt = Date.now();
      this.view.connected(call);
    } else if (state === "disconnected") {
      this.view.say(call, "Reconnecting…");
    } else if (state === "failed") {
      this.hangupFrame(call, "failed");
      this.finish(call, endText(call, "failed", call.seconds()));
    }
  }

  localCandidate(call, candidate) {
    if (call.over) return;
    const item = candidate?.candidate
      ? { candidate: candidate.candidate, sdpMid: candidate.sdpMid ?? null, sdpMLineIndex: candidate.sdpMLineIndex ?? null }
      : { candidate: "", sdpMid: null, sdpMLineIndex: null };
    if (!item.candidate) {
      if (call.sentEnd) return; // the end may be told twice (an empty candidate, then null)
      call.sentEnd = true;
    }
    if (call.canTrickle) this.sendCandidate(call, item);
    else call.localCandidates.push(item);
  }

  startTrickle(call) {
    call.canTrickle = true;
    this.flushCandidates(call);
  }

  flushCandidates(call) {
    for (const item of call.localCandidates.splice(0)) this.sendCandidate(call, item);
  }

  /** Send one candidate; kept, in order, for the next connection when it cannot go now. */
  sendCandidate(call, item) {
    if (call.localCandidates.length) {
      call.localCandidates.push(item);
      return;
    }
    const boxed = this.seal(call.peerBox, { v: 1, type: "candidate", call_id: call.id, from: this.myDevice, to: call.peerDevice, ...item });
    if (!this.socket.send({ type: "call.candidate", call_id: call.id, candidate: boxed })) call.localCandidates.push(item);
  }

  async remoteCandidate(call, frame) {
    if (call.over || !call.peerBox || !sameId(frame.from_device, call.peerDevice)) return;
    const plain = this.openSignal(frame.candidate, call.peerBox, { type: "candidate", callId: call.id, from: call.peerDevice });
    if (!plain || typeof plain.candidate !== "string") return;
    const init = plain.candidate
      ? { candidate: plain.candidate, sdpMid: typeof plain.sdpMid === "string" ? plain.sdpMid : null, sdpMLineIndex: Number.isInteger(plain.sdpMLineIndex) ? plain.sdpMLineIndex : null }
      : null;
    if (call.remoteSet) await this.addCandidate(call, init);
    else call.remoteCandidates.push(init);
  }

  async remoteReady(call) {
    call.remoteSet = true;
    for (const init of call.remoteCandidates.splice(0)) await this.addCandidate(call, init);
  }

  async addCandidate(call, init) {
    try {
      if (init) await call.pc.addIceCandidate(init);
      else await call.pc.addIceCandidate();
    } catch {
      // A candidate the connection cannot use: the others may do.
    }
  }

  // --- In the call ---------------------------------------------------------------------------

  toggleMute() {
    const call = this.call;
    if (!call?.stream || call.over) return;
    const tracks = call.stream.getAudioTracks();
    const muted = tracks.some((track) => track.enabled);
    for (const track of tracks) track.enabled = !muted;
    this.view.muteButton.textContent = muted ? "Unmute microphone" : "Mute microphone";
  }

  toggleCamera() {
    const call = this.call;
    if (!call?.stream || call.over) return;
    const tracks = call.stream.getVideoTracks();
    const off = tracks.some((track) => track.enabled);
    for (const track of tracks) track.enabled = !off;
    this.view.cameraButton.textContent = off ? "Camera on" : "Camera off";
  }

  /** The Hang up button: cancel a call still ringing, hang up one answered. */
  hangUp() {
    const call = this.call;
    if (!call || call.over) return;
    if (call.direction === "outgoing" && call.state === "ringing") {
      this.socket.request({ type: "call.cancel", call_id: call.id }).then((ended) => this.ended(ended), () => {});
      this.finish(call, "Call cancelled");
    } else if (call.state === "preparing" || call.state === "inviting") {
      // Not ringing yet: place() cancels it if the invite gets through.
      this.finish(call, "Call cancelled");
    } else {
      this.hangupFrame(call, "hangup");
      this.finish(call, endText(call, "hangup", call.seconds()));
    }
  }

  hangupFrame(call, reason) {
    this.socket.request({ type: "call.hangup", call_id: call.id, reason }).then((ended) => this.ended(ended), () => {});
  }

  /** The page goes away: so does its call. */
  leaving() {
    const call = this.call;
    if (!call || call.over) return;
    // Inviting: the invite (with the call id) is sent, and may ring.
    if (call.direction === "outgoing" && ["inviting", "ringing"].includes(call.state)) this.socket.send({ type: "call.cancel", call_id: call.id });
    else if (call.state === "connecting" || call.state === "active") this.socket.send({ type: "call.hangup", call_id: call.id });
    this.finish(call, "Call ended");
  }

  /** `call.ended`, as an event or as the reply to our own frame. */
  ended(frame) {
    const id = idOf(frame?.call_id);
    if (!id) return;
    if (!this.endedIds.has(id)) {
      this.endedIds.add(id);
      // The conversation page adds the call to its timeline.
      document.dispatchEvent(new CustomEvent("parley:call-ended", { detail: { callId: id, state: frame.state, reason: frame.reason, duration: frame.duration ?? null } }));
    }
    this.dropIncoming(id);
    const call = this.call;
    if (call && call.id === id && !call.over) {
      if (frame.reason === "glare") {
        // Both called at once and the other call goes on: it rings here instead.
        this.finish(call, "Both of you called at once.", { silent: true });
      } else {
        this.finish(call, endText(call, frame.reason, typeof frame.duration === "number" ? frame.duration : call.seconds()));
      }
    }
  }

  stopMedia(call) {
    for (const track of call.stream?.getTracks() || []) track.stop();
  }

  /** End the call here: media stopped, connection closed, the reason shown a moment. */
  finish(call, text, { error = false, silent = false } = {}) {
    if (call.over) return;
    call.over = true;
    call.state = "ended";
    this.stopMedia(call);
    if (call.pc) {
      call.pc.onicecandidate = null;
      call.pc.ontrack = null;
      call.pc.onconnectionstatechange = null;
      call.pc.close();
    }
    if (silent) {
      this.view.current = call;
      this.view.close();
    } else {
      this.view.ended(call, text, { error });
    }
    this.ring();
  }

  /** For the browser tests: the current call's state and decoded video frames, nothing more. */
  async stats() {
    const pc = this.call?.pc;
    if (!pc || this.call.over) return null;
    let framesDecoded = 0;
    const report = await pc.getStats();
    report.forEach((entry) => {
      if (entry.type === "inbound-rtp" && (entry.kind || entry.mediaType) === "video") framesDecoded += entry.framesDecoded || 0;
    });
    return { state: this.call.state, connectionState: pc.connectionState, framesDecoded };
  }
}

/** The call manager of this page's socket (goLive calls this with its own socket). */
export function startCalls(client, socket) {
  if (!manager) manager = new CallManager(client, socket);
  return manager;
}

/**
 * On every signed-in page (site.js): the socket and calls, when this browser has keys.
 * Pages that go live themselves (inbox, conversation) share the same socket.
 */
export function bootCalls() {
  booting ||= (async () => {
    if (!pageUser()) return null;
    const client = await Parley.load({ redirect: false });
    if (!client) return null;
    if (manager) return manager;
    return startCalls(client, new LiveSocket(client.deviceId));
  })().catch(() => null);
  return booting;
}

// Call buttons anywhere: <button data-call-handle="bob" data-call-user="<bob's id>" data-call-media="video">.
document.addEventListener("click", async (event) => {
  const button = event.target instanceof Element ? event.target.closest("button[data-call-handle]") : null;
  if (!button || button.getAttribute("aria-disabled") === "true") return;
  event.preventDefault();
  const calls = await bootCalls();
  if (!calls) {
    location.assign(`/setup?next=${encodeURIComponent(location.pathname)}`);
    return;
  }
  calls.place(button.dataset.callHandle, button.dataset.callMedia === "video" ? "video" : "audio", button.dataset.callUser);
});

// Harmless for anyone to call: answers counts, never keys or descriptions.
window.__parleyCalls = { stats: () => manager?.stats() ?? Promise.resolve(null) };
