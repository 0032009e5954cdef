// The playground's tokens: each streamed piece of text is a span that, hovered or focused, shows in the
// token box what ran for its token(s): per MoE layer the experts (gate weight) and the device of each.
// The box keeps the last token shown until the next completion: hiding it again would move the page
// under the pointer.
import type { TokenRouting } from "../../moe/token-routing.js";
import { $, el } from "./api.js";

/** each token span's routing */
const routings = new WeakMap<HTMLElement, readonly TokenRouting[]>();

/** What one layer ran, as a line: "layer 0: 3 (0.61) local-1 · 1 (0.39) local-0". */
function layerLine(l: TokenRouting["layers"][number]): string {
  const runs = l.experts.map((x) => `${x.expert} (${x.weight.toFixed(2)}) ${x.device ?? "failed"}`);
  return `layer ${l.layer}: ${runs.join(" · ")}${l.more ? ` · +${l.more} more` : ""}`;
}

function show(routing: readonly TokenRouting[]): void {
  const box = $("token-info");
  box.replaceChildren(
    ...routing.flatMap((t) => [el("b", `token ${t.token}`), ...t.layers.map((l) => el("div", layerLine(l), { "data-layer": String(l.layer) }))]),
  );
  box.hidden = false;
}

/** Appends a piece of the completion to `out`: a span its tokens' routing is shown for, or plain text without routing. */
export function appendPiece(out: HTMLElement, text: string, routing: readonly TokenRouting[] | undefined): void {
  if (!routing) return void out.append(text);
  // a last piece with no text (tokens whose text was held back, then cut) adds its routing to the span before
  const last = out.lastElementChild as HTMLElement | null;
  if (text === "" && last) return void (routings.set(last, [...(routings.get(last) ?? []), ...routing]));
  const span = el("span", text, { class: "token", tabindex: "0", "aria-describedby": "token-info" });
  routings.set(span, routing);
  span.onmouseenter = span.onfocus = () => show(routings.get(span) ?? []);
  out.append(span);
}
