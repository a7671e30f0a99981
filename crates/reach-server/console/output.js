// Live output: a script's stdout and stderr while it runs, read from the
// API's Server-Sent Events with fetch (EventSource cannot send the
// X-Requested-With header the session cookie needs). A stream the server
// closes before its end (it does every ten minutes) or that breaks is
// resumed after the last event's id, so nothing is shown twice or lost.
// Text is only ever inserted as text.

/**
 * Follows `path` (an /output URL). Calls onEvent(name, data) for each
 * `stdout`, `stderr`, `end` and `done` event; stops after `end` when
 * `untilEnd` (one command), after `done` otherwise. onError(message) on a
 * refusal. Returns a function that stops following.
 */
export function followOutput(path, { onEvent, onError, untilEnd = true }) {
  let lastId = null;
  let stopped = false;
  let controller = null;
  let failures = 0;

  const run = async () => {
    while (!stopped) {
      controller = new AbortController();
      const headers = { 'X-Requested-With': 'reach-console', Accept: 'text/event-stream' };
      if (lastId !== null) headers['Last-Event-ID'] = lastId;
      let finished = false;
      try {
        const response = await fetch(path, { headers, credentials: 'same-origin', signal: controller.signal });
        if (!response.ok) {
          let message = `The server answered ${response.status}.`;
          try {
            message = (await response.json()).error.message;
          } catch {
            // not the envelope: keep the status
          }
          if (response.status === 401) window.dispatchEvent(new CustomEvent('reach:signed-out', { detail: message }));
          if (response.status < 500 && response.status !== 429) {
            onError(message);
            return;
          }
          throw new Error(message);
        }
        finished = await read(response.body, (id, name, data) => {
          if (id !== null) lastId = id;
          failures = 0;
          onEvent(name, data);
          return name === 'done' || (untilEnd && name === 'end');
        });
      } catch (error) {
        if (stopped) return;
        failures += 1;
        if (failures >= 5) {
          onError(`Following the output failed: ${error.message}`);
          return;
        }
      }
      if (finished) return;
      await new Promise((resolve) => setTimeout(resolve, Math.min(250 * 2 ** failures, 4000)));
    }
  };
  run();
  return () => {
    stopped = true;
    if (controller) controller.abort();
  };
}

/** Reads events from `body` until it ends or `handle` returns true (then true). */
async function read(body, handle) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let id = null;
  let name = '';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, end).replace(/\r$/, '');
      buffer = buffer.slice(end + 1);
      if (line === '') {
        if (name && data.length) {
          let parsed = null;
          try {
            parsed = JSON.parse(data.join('\n'));
          } catch {
            parsed = null;
          }
          if (parsed && handle(id, name, parsed)) {
            reader.cancel();
            return true;
          }
        }
        name = '';
        data = [];
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') name = text;
      else if (field === 'data') data.push(text);
      else if (field === 'id') id = text;
    }
  }
}
