// The playground: a completion streamed from this base station's own API with the viewer's key, with
// each token's routing (which experts ran where) shown on hover (token-routing.ts).
import type { TokenRouting } from "../../moe/token-routing.js";
import { $, call, readEvents } from "./api.js";
import { appendPiece } from "./token-routing.js";

export function playground(key: string): void {
  const out = $("completion");
  $("prompt-form").onsubmit = async (e) => {
    e.preventDefault();
    const button = (e.target as HTMLFormElement).querySelector("button")!;
    button.disabled = true;
    out.replaceChildren();
    $("token-info").hidden = true;
    out.className = "";
    out.dataset.done = "false";
    try {
      const r = await call("/v1/completions", key, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ prompt: $<HTMLTextAreaElement>("prompt").value, max_tokens: Number($<HTMLInputElement>("max-tokens").value) || 24, stream: true, distmoe: { routing: true } }),
      });
      if (!r.ok) throw new Error(((await r.json().catch(() => null)) as { error?: { message?: string } } | null)?.error?.message ?? `${r.status} ${r.statusText}`);
      await readEvents(r, (data) => {
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data) as { choices?: Array<{ text?: string }>; distmoe?: { routing?: TokenRouting[] }; error?: { message?: string } };
        if (chunk.error) throw new Error(chunk.error.message);
        appendPiece(out, chunk.choices?.[0]?.text ?? "", chunk.distmoe?.routing);
      });
      out.dataset.done = "true";
    } catch (err) {
      out.className = "error";
      out.append(`\n${(err as Error).message}`);
    } finally {
      button.disabled = false;
    }
  };
}
