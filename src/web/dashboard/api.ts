// The page's access to its base station: the viewer's key (kept in this tab's sessionStorage, never in the
// address), requests that carry it, and a reader of server-sent events (EventSource cannot send the key).

const KEY = "distmoe-dashboard-key";

export const storedKey = (): string | null => sessionStorage.getItem(KEY);
export const keepKey = (key: string): void => sessionStorage.setItem(KEY, key);
export const forgetKey = (): void => sessionStorage.removeItem(KEY);

/** fetch on this base station with the key (none: without). */
export function call(path: string, key: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  if (key) headers.set("authorization", `Bearer ${key}`);
  return fetch(path, { ...init, headers });
}

/** JSON with the key; the answer's error message when it is not 2xx. */
export async function callJson<T>(path: string, key: string, init: RequestInit = {}): Promise<T> {
  const headers = new Headers(init.headers);
  if (init.body !== undefined) headers.set("content-type", "application/json");
  const r = await call(path, key, { ...init, headers });
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new Error(body?.error?.message ?? `${r.status} ${r.statusText}`);
  return body as T;
}

/** Calls `onData` with each event's data (its data: lines joined) until the stream ends. */
export async function readEvents(r: Response, onData: (data: string, event: string) => void): Promise<void> {
  const reader = r.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const lines = buffer.slice(0, end).split("\n");
      buffer = buffer.slice(end + 2);
      const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(l.startsWith("data: ") ? 6 : 5));
      const event = lines.find((l) => l.startsWith("event:"))?.slice(6).trim() ?? "message";
      if (data.length > 0) onData(data.join("\n"), event);
    }
  }
}

/** An element by id. */
export const $ = <T extends HTMLElement = HTMLElement>(id: string): T => document.getElementById(id) as T;

/** An element with text (never HTML: what the base station sends is shown as text). */
export function el(tag: string, text = "", attrs: Record<string, string> = {}): HTMLElement {
  const e = document.createElement(tag);
  e.textContent = text;
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}
