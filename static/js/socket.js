// The live socket of this browser's device: reconnects with backoff, and says when it
// (re)connected so the page can catch up by sync (the socket is a doorbell; the
// database plus sync is what guarantees delivery: docs/realtime.md).
//
// One socket per device per page: `new LiveSocket(deviceId, handlers)` a second time
// in the same page answers the socket already open and adds the handlers to it, so
// the call manager (on every signed-in page) and a page's own module share it.

// Close codes after which reconnecting is pointless (docs/realtime.md).
export const CLOSE_UNAUTHENTICATED = 4001;
export const CLOSE_UNKNOWN_DEVICE = 4004;
export const CLOSE_REVOKED = 4005;
export const CLOSE_LOGGED_OUT = 4006;
export const CLOSE_SUSPENDED = 4007;
const FINAL_CLOSE_CODES = [CLOSE_UNAUTHENTICATED, CLOSE_UNKNOWN_DEVICE, CLOSE_REVOKED, CLOSE_LOGGED_OUT, CLOSE_SUSPENDED];
const HEARTBEAT_MS = 25_000;
// No frame at all (not even the pong) this long after a ping: the connection is dead
// even if the browser has not noticed yet (a sleeping laptop, a NAT that forgot us).
const DEAD_AFTER_MS = 10_000;
// A request (a frame sent with an `id`) that gets no reply this long fails.
const REQUEST_TIMEOUT_MS = 20_000;
// A request made while the socket is (re)connecting, as on a page that has just
// loaded, waits this long for the hello before it fails as offline.
const CONNECT_GRACE_MS = 5_000;

const sockets = new Map(); // deviceId -> the open LiveSocket of this page

/** A refusal of a frame by the server (`{"type": "error", "error": {...}}`), or no reply. */
export class SocketError extends Error {
  constructor(error) {
    super(error?.message || "The server refused the request.");
    this.name = "SocketError";
    this.code = error?.code || "error";
    this.field = error?.field || null;
    this.details = error || {};
  }
}

export class LiveSocket {
  /** @param {string} deviceId  @param {{onEvent, onStatus, onConnected, onEnded}} handlers */
  constructor(deviceId, handlers = {}) {
    const existing = sockets.get(deviceId);
    if (existing && !existing.stopped) {
      existing.addHandlers(handlers);
      return existing; // eslint-disable-line no-constructor-return
    }
    sockets.set(deviceId, this);
    this.deviceId = deviceId;
    this.listeners = [handlers];
    this.attempt = 0;
    this.ws = null;
    this.stopped = false;
    this.connected = false;
    this.heartbeat = null;
    this.nextId = 1;
    this.pending = new Map(); // request id -> {resolve, reject, timer}
    this.connectWaiters = new Set(); // callbacks of requests waiting for the hello
    this.connect();
    // A laptop waking up or a network coming back: try at once, not after the backoff.
    window.addEventListener("online", () => this.retryNow());
    // The browser knows the network is gone: say so now rather than at the next ping.
    window.addEventListener("offline", () => this.drop());
  }

  /** More handlers on this socket; told at once when it is connected already. */
  addHandlers(handlers) {
    if (this.listeners.includes(handlers)) return;
    this.listeners.push(handlers);
    if (this.statusText) handlers.onStatus?.(this.statusText);
    if (this.connected) queueMicrotask(() => handlers.onConnected?.(this.hello));
  }

  emit(name, ...args) {
    if (name === "onStatus") this.statusText = args[0];
    for (const handlers of this.listeners) handlers[name]?.(...args);
  }

  connect() {
    if (this.stopped) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws/?device=${encodeURIComponent(this.deviceId)}`);
    this.ws = ws;
    this.emit("onStatus", this.attempt ? "Reconnecting…" : "Connecting…");
    ws.onmessage = (event) => {
      this.lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.type === "hello") {
        this.attempt = 0;
        this.connected = true;
        this.hello = frame;
        this.emit("onStatus", "");
        this.emit("onConnected", frame);
        this.settleConnectWaiters(true);
        clearInterval(this.heartbeat);
        this.heartbeat = setInterval(() => this.ping(), HEARTBEAT_MS);
        return;
      }
      if (frame.type === "closing") {
        this.ending = frame;
        return;
      }
      if (frame.ref !== undefined && this.pending.has(frame.ref)) {
        const request = this.pending.get(frame.ref);
        this.pending.delete(frame.ref);
        clearTimeout(request.timer);
        if (frame.type === "error") request.reject(new SocketError(frame.error));
        else request.resolve(frame);
        return;
      }
      this.emit("onEvent", frame);
    };
    ws.onclose = (event) => {
      clearInterval(this.heartbeat);
      if (this.ws !== ws) return;
      this.ws = null;
      this.lost();
      const code = event.code;
      if (FINAL_CLOSE_CODES.includes(code)) {
        this.stopped = true;
        if (sockets.get(this.deviceId) === this) sockets.delete(this.deviceId);
        this.emit("onEnded", code, this.ending?.message || "");
        return;
      }
      this.scheduleReconnect();
    };
  }

  /** The connection is gone: requests waiting for a reply fail (they may be retried). */
  lost() {
    this.connected = false;
    for (const [id, request] of this.pending) {
      clearTimeout(request.timer);
      request.reject(new SocketError({ code: "offline", message: "The connection was lost. Try again." }));
      this.pending.delete(id);
    }
  }

  ping() {
    const sentAt = Date.now();
    if (!this.send({ type: "ping" })) return;
    setTimeout(() => {
      if (this.ws && (this.lastFrameAt || 0) < sentAt) this.drop();
    }, DEAD_AFTER_MS);
  }

  /** Give up on the current connection and reconnect with backoff. */
  drop() {
    const ws = this.ws;
    if (!ws || this.stopped) return;
    this.ws = null;
    clearInterval(this.heartbeat);
    ws.onclose = null;
    ws.close();
    this.lost();
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    if (this.stopped) return;
    // 1 s, 2 s, 4 s … up to 30 s, with jitter so a restarted server is not hit by everyone at once.
    const delay = Math.min(30_000, 1000 * 2 ** this.attempt) * (0.75 + Math.random() / 2);
    this.attempt += 1;
    this.emit("onStatus", `Offline. Reconnecting in ${Math.round(delay / 1000)} s…`);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Close for good: no reconnect, no more events or hellos (signing out). */
  stop() {
    this.stopped = true;
    this.settleConnectWaiters(false);
    clearTimeout(this.timer);
    clearInterval(this.heartbeat);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      ws.close();
    }
    this.lost();
    if (sockets.get(this.deviceId) === this) sockets.delete(this.deviceId);
  }

  retryNow() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.timer);
    this.connect();
  }

  /** Send a frame if connected; answers whether it went. */
  send(frame) {
    if (!this.connected || this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Resolves true once a hello has arrived, false after `within` ms or on stop(). */
  whenConnected(within) {
    if (this.connected) return Promise.resolve(true);
    if (this.stopped) return Promise.resolve(false);
    return new Promise((resolve) => {
      const settle = (connected) => {
        clearTimeout(timer);
        this.connectWaiters.delete(settle);
        resolve(connected);
      };
      const timer = setTimeout(() => settle(false), within);
      this.connectWaiters.add(settle);
    });
  }

  settleConnectWaiters(connected) {
    for (const settle of [...this.connectWaiters]) settle(connected);
  }

  /**
   * Send a frame with an `id` and answer the server's reply to it (the frame that
   * carries the id back as `ref`); a SocketError for an `error` reply, no connection
   * (after waiting CONNECT_GRACE_MS for one), or no reply in time.
   */
  async request(frame, { timeout = REQUEST_TIMEOUT_MS } = {}) {
    if (!this.connected) await this.whenConnected(CONNECT_GRACE_MS);
    return new Promise((resolve, reject) => {
      const id = `r${this.nextId++}`;
      if (!this.send({ ...frame, id })) {
        reject(new SocketError({ code: "offline", message: "Not connected to Parley. Check your connection and try again." }));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new SocketError({ code: "timeout", message: "Parley did not answer in time. Try again." }));
      }, timeout);
      this.pending.set(id, { resolve, reject, timer });
    });
  }
}

/** Stop every live socket of this page: signing out revokes the device, and a hello
 * arriving after that would send requests on behalf of a device that is gone. */
export function stopLiveSockets() {
  for (const socket of [...sockets.values()]) socket.stop();
}
