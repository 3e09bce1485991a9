// Guest side of TensorBoard's iframe-plugin IPC (mirrors plugin-guest.ts / message.ts
// of TensorBoard 2.21): a MessagePort handshake, JSON messages {type, id, payload,
// error, isReply}. The host awaits a reply to every message it sends.

const listeners = new Map();
const waits = new Map();
let nextId = 0;
let port = null;

function connect() {
  if (port || window.parent === window) return;
  const channel = new MessageChannel();
  port = channel.port1;
  port.addEventListener('message', async (event) => {
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch (e) {
      return;
    }
    if (msg.isReply) {
      const wait = waits.get(msg.id);
      if (wait) {
        waits.delete(msg.id);
        if (msg.error) wait.reject(new Error(msg.error));
        else wait.resolve(msg.payload);
      }
      return;
    }
    let payload = null;
    let error = null;
    const callback = listeners.get(msg.type);
    if (callback) {
      try {
        payload = (await callback(msg.payload)) ?? null;
      } catch (e) {
        error = String(e);
      }
    }
    port.postMessage(JSON.stringify({type: msg.type, id: msg.id, payload, error, isReply: true}));
  });
  port.start();
  window.parent.postMessage('experimental.bootstrap', '*', [channel.port2]);
}

/** Registers `callback(payload)` for host messages of `type` (e.g. 'experimental.DataReloaded'). */
export function listen(type, callback) {
  connect();
  listeners.set(type, callback);
}

/** Sends a message to the host; resolves with its reply payload (rejects after `timeoutMs`). */
export function sendMessage(type, payload = null, timeoutMs = 3000) {
  connect();
  if (!port) return Promise.reject(new Error('not inside TensorBoard'));
  const id = nextId++;
  port.postMessage(JSON.stringify({type, id, payload, error: null, isReply: false}));
  return new Promise((resolve, reject) => {
    waits.set(id, {resolve, reject});
    setTimeout(() => {
      if (waits.delete(id)) reject(new Error(`no reply to ${type}`));
    }, timeoutMs);
  });
}
